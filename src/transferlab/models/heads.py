"""Heads on top of a backbone: bottleneck, classifier, domain discriminator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .layers import lr_stages


class Encoder(nn.Module):
    """Backbone followed by an optional bottleneck ``Linear -> BatchNorm -> ReLU`` (as in TLlib/CDAN).

    ``out_features`` is the size of the representation that classifiers and discriminators see.
    """

    def __init__(self, backbone: nn.Module, bottleneck_dim: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        in_features = backbone.out_features
        if bottleneck_dim > 0:
            self.bottleneck = nn.Sequential(
                nn.Linear(in_features, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU(inplace=True)
            )
            self.out_features = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.out_features = in_features
        self.stage_scales: dict[int, float] = {}
        """Learning-rate multipliers by ``id(parameter)`` that override :meth:`lr_scales`' (``model.stage_lr``)."""

    def forward(self, x) -> torch.Tensor:
        return self.bottleneck(self.backbone(x))

    def sequence(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame states ``(B, T, D)`` and their mask ``(B, T)`` of a sequence backbone (``hf:``), for per-frame heads
        such as CTC; the bottleneck (a per-sample layer) is not applied."""
        if not hasattr(self.backbone, "sequence"):
            raise ConfigError(f"the {type(self.backbone).__name__} backbone gives one vector per sample, not per-frame "
                              f"states; a CTC head needs an hf: backbone (wav2vec2/HuBERT-style)")
        return self.backbone.sequence(x)

    def lr_scales(self, backbone_scale: float = 1.0, layer_decay: float = 1.0) -> dict[int, float]:
        """Learning-rate multipliers by ``id(parameter)`` for the backbone: ``backbone_scale`` at its last stage and
        ``layer_decay`` less per stage towards the input (stage i of n gets ``backbone_scale·layer_decay^(n−1−i)``).
        The bottleneck and everything outside the encoder keep the optimizer's lr. The engine reads this from every
        module that has it, so no name is special."""
        stages = lr_stages(self.backbone)
        scales = {id(p): backbone_scale * layer_decay ** (len(stages) - 1 - i)
                  for i, stage in enumerate(stages) for p in stage}
        for p in self.backbone.parameters():
            scales.setdefault(id(p), backbone_scale)
        scales.update(self.stage_scales)
        return scales


class DomainDiscriminator(nn.Module):
    """MLP domain classifier: one ``Linear -> BatchNorm -> ReLU`` block per hidden width, then ``Linear(·, 1)``.

    ``hidden`` is an int ``h`` for TLlib's layout ``in -> h -> h -> 1`` (two hidden layers), or a list of
    widths, in order; an empty list is a linear discriminator ``Linear(in, 1)`` (the DANN paper's shallow
    experiments). ``batch_norm=False`` drops the BatchNorm (ADDA). The layers sit in ``net``, so an int
    ``h`` and ``[h, h]`` build the same module with the same state-dict keys.

    Returns one logit per sample (source = 1); losses use ``binary_cross_entropy_with_logits``,
    which is safe under bf16 autocast, unlike a sigmoid followed by BCE.
    """

    def __init__(self, in_features: int, hidden: int | Sequence[int] = 1024, batch_norm: bool = True) -> None:
        super().__init__()
        widths = [in_features, *([hidden, hidden] if isinstance(hidden, int) else hidden)]
        layers: list[nn.Module] = []
        for i, o in zip(widths, widths[1:]):
            layers += [nn.Linear(i, o), nn.BatchNorm1d(o) if batch_norm else nn.Identity(), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)
