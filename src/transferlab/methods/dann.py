"""DANN — Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.

    loss = CE(C(F(x_s)), y_s) + trade_off · L_d(D(R_λ(F(x_s))), D(R_λ(F(x_t))))

with R_λ the gradient reversal layer and λ(p) = 2/(1+exp(−10p)) − 1 over training progress p (or a constant λ).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveInt
from torch import nn

from ..losses import DomainAdversarialLoss
from ..models import DomainDiscriminator
from ..schedules import grl_schedule
from .base import METHODS, Method, MethodConfig


@METHODS.register("dann")
class DANN(Method):
    class Config(MethodConfig):
        trade_off: NonNegativeFloat = 1.0
        """Weight of the domain-adversarial loss."""
        grl_gamma: NonNegativeFloat = 10.0
        """γ of the GRL schedule λ(p) = grl_max·(2/(1+exp(−γp)) − 1)."""
        grl_max: NonNegativeFloat = 1.0
        grl_schedule: Literal["ramp", "constant"] = "ramp"
        """``ramp``: λ rises by the schedule above; ``constant``: λ = grl_max at every step."""
        discriminator_hidden: PositiveInt | list[PositiveInt] = 1024
        """Discriminator hidden widths: an int h is TLlib's two layers in -> h -> h -> 1; a list gives one
        layer per width, ``[]`` a linear discriminator (the paper's shallow Amazon-reviews experiments)."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        h = self.hparams
        self.head = nn.Linear(encoder.out_features, num_classes)
        self.domain_loss = DomainAdversarialLoss(DomainDiscriminator(encoder.out_features, h.discriminator_hidden))
        self.grl_schedule = grl_schedule(h.grl_schedule, h.grl_gamma, h.grl_max)

    def update(self, source, target, ctx):
        f_s, f_t = self.features(source.x, target.x)
        cls_loss = F.cross_entropy(self.head(f_s).float(), source.y)
        transfer_loss, domain_acc = self.domain_loss(f_s, f_t, ctx.scalar("grl_lambda", self.grl_schedule))
        ctx.backward_and_step(cls_loss + self.hparams.trade_off * transfer_loss, "main")
        return {"cls_loss": cls_loss.detach(), "transfer_loss": transfer_loss.detach(), "domain_acc": domain_acc}

    def predict(self, x):
        return self.head(self.encoder(x))
