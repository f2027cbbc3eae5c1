"""Run under ``torchrun --nproc_per_node 2`` (see conftest.torchrun): train a tiny run and save each rank's weights.

``FAIL_RANK``/``FAIL_STEP`` (environment) make that rank raise inside ``update`` at that step, to test
that one failing process ends the whole job.
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from conftest import tiny_config
from transferlab.engine.checkpoint import CheckpointManager
from transferlab.experiment import build


def main(out: str, method: str) -> None:
    torch.set_num_threads(1)
    config = tiny_config(method, iterations=6, train={"deterministic": False, "checkpoint_every": 2})
    experiment = build(config)
    trainer = experiment.trainer(Path(out) / "run", progress=False)
    saves = []
    original_save = CheckpointManager.save
    CheckpointManager.save = lambda self, step, *a, **k: saves.append(step) or original_save(self, step, *a, **k)
    if os.environ.get("FAIL_RANK") == str(trainer.rank):
        update, fail_step = experiment.method.update, int(os.environ["FAIL_STEP"])

        def failing_update(source, target, ctx):
            if ctx.step == fail_step:
                raise RuntimeError(f"injected failure on rank {trainer.rank} at step {ctx.step}")
            return update(source, target, ctx)

        experiment.method.update = failing_update
    initial = {k: v.clone() for k, v in experiment.method.state_dict().items()}
    result = trainer.fit()
    state = experiment.method.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(Path(out) / f"rank{trainer.rank}.safetensors"))
    moved = any(not torch.equal(initial[k], state[k]) for k in state if state[k].is_floating_point())
    print(f"rank {trainer.rank}/{trainer.world} moved={moved} saves={len(saves)} acc={result['target_test/acc']:.2f}",
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
