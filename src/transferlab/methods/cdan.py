"""CDAN and CDAN+E — Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

    loss = CE(C(f_s), y_s) + trade_off · L_d(D(R_λ(T(f, g))))      g = softmax(C(f))

T is the multilinear map f ⊗ g, or its randomized version when F·C exceeds ``randomize_above``
(the paper uses 4096); CDAN+E (``cdan_e``) weights each sample by 1 + e^{−H(g)}.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from ..losses import ConditionalDomainAdversarialLoss, MultilinearMap
from ..models import DomainDiscriminator
from ..schedules import grl_schedule
from .base import METHODS, Method
from .dann import DANN


@METHODS.register("cdan")
class CDAN(Method):
    entropy_conditioning = False

    class Config(DANN.Config):  # DANN's trade-off, GRL schedule and discriminator, plus the conditioning
        randomized: Literal["auto", "yes", "no"] = "auto"
        """Use the randomized multilinear map: ``auto`` = when features·classes > randomize_above."""
        randomize_above: PositiveInt = 4096
        randomized_dim: PositiveInt = 1024

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        h = self.hparams
        full_dim = encoder.out_features * num_classes
        randomized = h.randomized == "yes" or (h.randomized == "auto" and full_dim > h.randomize_above)
        multilinear = MultilinearMap(encoder.out_features, num_classes, randomized, h.randomized_dim)
        self.head = nn.Linear(encoder.out_features, num_classes)
        self.domain_loss = ConditionalDomainAdversarialLoss(
            DomainDiscriminator(multilinear.out_features, h.discriminator_hidden), multilinear,
            entropy_conditioning=self.entropy_conditioning,
        )
        self.grl_schedule = grl_schedule(h.grl_schedule, h.grl_gamma, h.grl_max)

    def update(self, source, target, ctx):
        f_s, f_t = self.features(source.x, target.x)
        logits_s, logits_t = self.head(f_s), self.head(f_t)
        cls_loss = F.cross_entropy(logits_s.float(), source.y)
        transfer_loss, domain_acc = self.domain_loss(
            logits_s, f_s, logits_t, f_t, ctx.scalar("grl_lambda", self.grl_schedule)
        )
        ctx.backward_and_step(cls_loss + self.hparams.trade_off * transfer_loss, "main")
        return {"cls_loss": cls_loss.detach(), "transfer_loss": transfer_loss.detach(), "domain_acc": domain_acc}

    def predict(self, x):
        return self.head(self.encoder(x))


@METHODS.register("cdan_e")
class CDANE(CDAN):
    """CDAN+E: CDAN with entropy conditioning."""

    entropy_conditioning = True
