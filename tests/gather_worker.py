"""Run under ``torchrun --nproc_per_node 2``: one engine step of a contrastive loss over the gathered global
batch; rank 0 saves the updated weights (compared with a one-process step on the whole batch)."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from transferlab.config import OptimConfig, TrainConfig
from transferlab.data import ArrayDataset, FeatureTransform
from transferlab.engine import Trainer
from transferlab.losses import nt_xent
from transferlab.methods import Method


def global_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)


def initial_encoder():
    torch.manual_seed(0)
    return nn.Linear(6, 4, bias=False)


class Contrastive(Method):
    inputs = {"source": False}

    def update(self, source, ctx):
        view1, view2 = global_batch()
        rank, n = ctx.trainer.rank, 4  # this process's half of the global batch
        z1, z2 = self.encoder(view1[rank * n:(rank + 1) * n]), self.encoder(view2[rank * n:(rank + 1) * n])
        loss = nt_xent(ctx.gather(z1), ctx.gather(z2), 0.5)
        ctx.backward_and_step(loss, "main")
        return {"loss": loss.detach()}


def main(out: str) -> None:
    torch.set_num_threads(1)
    method = Contrastive(initial_encoder(), 2)
    data = ArrayDataset(torch.zeros(8, 6), None, "toy", "train", 2)
    trainer = Trainer(method, data, transform=FeatureTransform(), batch_size=4, progress=False,
                      train=TrainConfig(iterations=1, eval_every=0, checkpoint_every=0, log_every=1, device="cpu"),
                      optim=OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.0, lr_schedule="constant"))
    trainer.fit()
    if trainer.rank == 0:
        save_file({"weight": method.encoder.weight.detach().contiguous()}, str(Path(out) / "gathered.safetensors"))
    print(f"rank {trainer.rank}/{trainer.world} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
