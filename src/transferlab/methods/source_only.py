"""Source only: train on labelled source data, apply to the target unchanged (the no-adaptation baseline)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import METHODS, Method


@METHODS.register("source_only")
class SourceOnly(Method):
    """loss = CE(C(F(x_s)), y_s). The target batch is drawn but unused (same data budget as the others)."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        self.head = nn.Linear(encoder.out_features, num_classes)

    def update(self, source, target, ctx):
        loss = F.cross_entropy(self.head(self.encoder(source.x)).float(), source.y)
        ctx.backward_and_step(loss, "main")
        return {"cls_loss": loss.detach()}

    def predict(self, x):
        return self.head(self.encoder(x))
