"""MCD — Saito et al., "Maximum Classifier Discrepancy for Unsupervised Domain Adaptation", CVPR 2018.

A generator G and two classifiers F1, F2. Each iteration (sec. 3.2):
  A. min over G, F1, F2 of  CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s)
  B. min over F1, F2 of     CE_s(F1) + CE_s(F2) − d(F1(G(x_t)), F2(G(x_t)))     (G fixed)
  C. min over G of          d(F1(G(x_t)), F2(G(x_t))),  repeated ``num_k`` times  (F1, F2 fixed)
with d the mean absolute difference of the two softmax outputs. Two named optimizers:
``generator`` (G) and ``classifiers`` (F1, F2). With ``bn_mode: joint`` every step, C included, forwards
source and target through G as one batch (TLlib), so BatchNorm always sees the same joint statistics.

``entropy_weight`` adds TLlib's optional "entropy" term w·(b(F1(G(x_t))) + b(F2(G(x_t)))) to steps A and B:
b is the class-balance entropy of the batch's mean target prediction (:func:`~transferlab.losses.class_balance`),
not a per-sample entropy. TLlib's default weight is 0.01; the paper has no such term, and neither do we by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from ..losses import class_balance, classifier_discrepancy
from .base import METHODS, Method, MethodConfig, OptimizerRequest


def _classifier(in_features: int, hidden: int, num_classes: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


@METHODS.register("mcd")
class MCD(Method):
    class Config(MethodConfig):
        num_k: PositiveInt = 4
        """How many times step C updates the generator per iteration (the paper's n)."""
        head_hidden: NonNegativeInt = 256
        """Hidden width of each classifier F1, F2 (0 = a single linear layer)."""
        entropy_weight: NonNegativeFloat = 0.0
        """w of TLlib's class-balance entropy of the mean target prediction, in steps A and B (TLlib's
        ``--trade-off-entropy``, 0.01 there; the paper uses none)."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        hidden = self.hparams.head_hidden
        self.head_1 = _classifier(encoder.out_features, hidden, num_classes)
        self.head_2 = _classifier(encoder.out_features, hidden, num_classes)

    def optimizers(self):
        return {
            "generator": OptimizerRequest([(self.encoder.parameters(), 1.0)]),
            "classifiers": OptimizerRequest([(list(self.head_1.parameters()) + list(self.head_2.parameters()), 1.0)]),
        }

    def _source_loss(self, f_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head_1(f_s).float(), y_s) + F.cross_entropy(self.head_2(f_s).float(), y_s)

    def _classifier_loss(self, f_s: torch.Tensor, y_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """Steps A and B's shared part: both classifiers' source loss, plus the optional class balance on the target."""
        loss = self._source_loss(f_s, y_s)
        if self.hparams.entropy_weight > 0:
            loss = loss + self.hparams.entropy_weight * (class_balance(self.head_1(f_t)) + class_balance(self.head_2(f_t)))
        return loss

    def _target_features(self, x_s, x_t) -> torch.Tensor:
        """G(x_t) for step C, normalised as ``bn_mode`` says: with the source batch (joint) or alone (separate)."""
        if self.hparams.bn_mode == "joint":
            return self.features(x_s, x_t)[1]
        return self.encoder(x_t)

    def update(self, source, target, ctx):
        # Step A: fit both classifiers and the generator on the source.
        f_s, f_t = self.features(source.x, target.x)
        loss_a = self._classifier_loss(f_s, source.y, f_t)
        ctx.backward_and_step(loss_a, "generator", "classifiers")

        # Step B: with G fixed, make the classifiers disagree on the target while staying right on the source.
        with torch.no_grad():
            f_s, f_t = self.features(source.x, target.x)
        discrepancy_b = classifier_discrepancy(self.head_1(f_t), self.head_2(f_t))
        loss_b = self._classifier_loss(f_s, source.y, f_t) - discrepancy_b
        ctx.backward_and_step(loss_b, "classifiers")

        # Step C: with F1, F2 fixed, train G to remove the disagreement.
        for _ in range(self.hparams.num_k):
            f_t = self._target_features(source.x, target.x)
            discrepancy_c = classifier_discrepancy(self.head_1(f_t), self.head_2(f_t))
            ctx.backward_and_step(discrepancy_c, "generator")
        return {"loss_a": loss_a.detach(), "discrepancy_b": discrepancy_b.detach(), "discrepancy_c": discrepancy_c.detach()}

    def predict(self, x):
        f = self.encoder(x)
        # Ensemble of the two classifiers: log of the averaged class probabilities.
        return torch.log(0.5 * (self.head_1(f).float().softmax(1) + self.head_2(f).float().softmax(1)))
