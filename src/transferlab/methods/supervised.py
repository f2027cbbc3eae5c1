"""Supervised training on one labelled set: the baseline of domain adaptation (source only) and the
three strategies of the transfer protocol (fine-tuning, training from scratch, linear probing).

    loss = CE(C(F(x)), y)

``linear_probe`` freezes the encoder F: its parameters get no gradient and it stays in eval mode,
so BatchNorm statistics do not move either; only the linear classifier C is trained.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import METHODS, Method, OptimizerRequest


@METHODS.register("supervised")
class Supervised(Method):
    """loss = CE(C(F(x)), y) on one labelled set (fine-tuning, or from scratch without encoder_init)."""

    inputs = {"source": True}

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        self.head = nn.Linear(encoder.out_features, num_classes)

    def update(self, source, ctx):
        loss = F.cross_entropy(self.predict(source.x).float(), source.y)
        ctx.backward_and_step(loss, "main")
        return {"cls_loss": loss.detach()}

    def predict(self, x):
        return self.head(self.encoder(x))


@METHODS.register("linear_probe")
class LinearProbe(Supervised):
    """A linear classifier on a frozen encoder (parameters and BatchNorm statistics fixed)."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def optimizers(self):
        return {"main": OptimizerRequest([(self.head.parameters(), 1.0)])}


@METHODS.register("source_only")
class SourceOnly(Supervised):
    """Source only: the no-adaptation baseline (train on the labelled source, test on the target).

    The target set is used only for evaluation."""
