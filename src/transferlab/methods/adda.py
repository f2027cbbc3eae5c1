"""ADDA — Tzeng et al., "Adversarial Discriminative Domain Adaptation", CVPR 2017 (the two-stage version).

Stage 1 (the first ``pretrain_fraction`` of training): source encoder M_s and classifier C on the
labelled source, min CE(C(M_s(x_s)), y_s).
Stage 2: a *separate* target encoder M_t, initialised from M_s, is trained against a domain
discriminator D with the inverted-label GAN loss, while M_s and C stay fixed:
    min_D  −E_s[log D(M_s(x_s))] − E_t[log(1 − D(M_t(x_t)))]
    min_Mt −E_t[log D(M_t(x_t))]
At test time the target is classified by C(M_t(x)). As in the paper, stage 2 uses Adam
(lr 2e-4, β = (0.5, 0.999)) unless overridden.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from ..losses import binary_domain_loss
from ..models import DomainDiscriminator
from .base import METHODS, Method, MethodConfig, OptimizerRequest


@METHODS.register("adda")
class ADDA(Method):
    class Config(MethodConfig):
        pretrain_fraction: float = Field(0.5, gt=0.0, lt=1.0)
        """Fraction of the iterations spent on stage 1 (source pre-training)."""
        discriminator_hidden: PositiveInt | list[PositiveInt] = 500
        """Discriminator hidden widths (no BatchNorm): an int h is the paper's in -> h -> h -> 1 (h = 500);
        a list gives one layer per width, ``[]`` a linear discriminator."""
        adversarial_optimizer: Literal["sgd", "adam", "adamw"] = "adam"
        adversarial_lr: PositiveFloat = 2e-4
        adversarial_betas: tuple[float, float] = (0.5, 0.999)
        adversarial_weight_decay: NonNegativeFloat = 2.5e-5
        adversarial_lr_schedule: Literal["inverse", "cosine", "constant"] = "constant"
        """The paper trains stage 2 at a constant learning rate."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        self.head = nn.Linear(encoder.out_features, num_classes)
        self.target_encoder = copy.deepcopy(encoder)  # re-initialised from the source encoder at stage 2
        self.discriminator = DomainDiscriminator(encoder.out_features, self.hparams.discriminator_hidden, batch_norm=False)
        self.register_buffer("adapted", torch.zeros((), dtype=torch.bool))

    @property
    def source_encoder(self) -> nn.Module:
        return self.encoder

    def optimizers(self):
        h = self.hparams
        adversarial = {"name": h.adversarial_optimizer, "lr": h.adversarial_lr, "betas": h.adversarial_betas,
                       "weight_decay": h.adversarial_weight_decay, "lr_schedule": h.adversarial_lr_schedule}
        return {
            "source": OptimizerRequest([(list(self.encoder.parameters()) + list(self.head.parameters()), 1.0)]),
            "target_encoder": OptimizerRequest([(self.target_encoder.parameters(), 1.0)], adversarial),
            "discriminator": OptimizerRequest([(self.discriminator.parameters(), 1.0)], adversarial),
        }

    def _stage_2_start(self, total_steps: int) -> int:
        return math.ceil(self.hparams.pretrain_fraction * total_steps)

    def graph_phase(self, ctx):
        return ctx.step >= self._stage_2_start(ctx.total_steps)  # stage 1, stage 2

    def update(self, source, target, ctx):
        stage_2_start = self._stage_2_start(ctx.total_steps)
        if ctx.step < stage_2_start:
            loss = F.cross_entropy(self.head(self.encoder(source.x)).float(), source.y)
            ctx.backward_and_step(loss, "source")
            return {"cls_loss": loss.detach()}
        if ctx.step == stage_2_start:
            self.target_encoder.load_state_dict(self.encoder.state_dict())
            self.adapted.fill_(True)

        self.encoder.eval()  # M_s is fixed in stage 2, BatchNorm/dropout included
        with torch.no_grad():
            f_s = self.encoder(source.x)
        f_t = self.target_encoder(target.x)
        d_loss, domain_acc = binary_domain_loss(self.discriminator(f_s), self.discriminator(f_t.detach()))
        ctx.backward_and_step(d_loss, "discriminator")
        logit_t = self.discriminator(f_t).float()
        g_loss = F.binary_cross_entropy_with_logits(logit_t, torch.ones_like(logit_t))  # inverted labels
        ctx.backward_and_step(g_loss, "target_encoder")
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "domain_acc": domain_acc}

    def encoder_for(self, domain):
        return self.target_encoder if domain == "target" and bool(self.adapted) else self.encoder

    def predict_on(self, x, domain):
        return self.head(self.representation(x, domain))

    def predict(self, x):
        return self.predict_on(x, "target")
