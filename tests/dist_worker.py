"""Run under ``torchrun --nproc_per_node 2``: train a tiny DANN/MCD run and save each rank's weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

from transferlab.experiment import build  # noqa: E402


def main(out: str, method: str) -> None:
    torch.set_num_threads(1)
    config = tiny_config(method, iterations=6, train={"deterministic": False})
    experiment = build(config)
    trainer = experiment.trainer(Path(out) / "run", progress=False)
    initial = {k: v.clone() for k, v in experiment.method.state_dict().items()}
    result = trainer.fit()
    state = experiment.method.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(Path(out) / f"rank{trainer.rank}.safetensors"))
    moved = any(not torch.equal(initial[k], state[k]) for k in state if state[k].is_floating_point())
    print(f"rank {trainer.rank}/{trainer.world} moved={moved} acc={result['target_test/acc']:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
