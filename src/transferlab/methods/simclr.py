"""SimCLR — Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.

Two random views x̃₁, x̃₂ of each image, one encoder F and a projection head g (MLP), and

    L = NT-Xent(g(F(x̃₁)), g(F(x̃₂)); τ)

over the global batch: under multi-process training the projections are gathered from every
process, so each sample has 2·N·world − 2 negatives, as in the paper's large-batch setting
(BatchNorm statistics stay per process). F transfers; g is discarded (the paper's finding that the
representation before the head transfers better). Views: :mod:`transferlab.data.augment`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from ..data.augment import Views
from ..errors import ConfigError
from ..losses import nt_xent
from .base import METHODS, Method, MethodConfig


@METHODS.register("simclr")
class SimCLR(Method):
    """NT-Xent between projections of two random views of each unlabelled image (Chen et al. 2020)."""

    inputs = {"source": False}
    graph_capturable = False
    graph_capturable_why = "its Kornia views pick which samples to augment on the host"

    class Config(MethodConfig):
        temperature: PositiveFloat = 0.5
        """τ (0.5: the paper's CIFAR-10 value; the digits configs use 0.2, a common choice for short schedules)."""
        projection_dim: PositiveInt = 128
        projection_hidden: PositiveInt = 512
        augmentation: Literal["natural", "digits", "medical"] = "natural"
        """The view pipeline (see transferlab.data.augment)."""
        crop_scale: tuple[float, float] | None = Field(None, description="random-resized-crop area range; default: the preset's")

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        h, spec = self.hparams, self.input_spec
        if spec is None or spec.kind != "image":
            raise ConfigError(f"simclr makes image views; it needs image input (got {spec.kind if spec else 'no input_spec'})")
        self.views = Views(h.augmentation, spec.shape, spec.mean, spec.std, h.crop_scale)
        self.projector = nn.Sequential(nn.Linear(encoder.out_features, h.projection_hidden),
                                       nn.BatchNorm1d(h.projection_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(h.projection_hidden, h.projection_dim))

    def update(self, source, ctx):
        x1, x2 = self.views(source.x), self.views(source.x)
        z1, z2 = self.projector(self.encoder(torch.cat([x1, x2]))).chunk(2)
        loss = nt_xent(ctx.gather(z1), ctx.gather(z2), self.hparams.temperature)
        ctx.backward_and_step(loss, "main")
        return {"nt_xent": loss.detach()}
