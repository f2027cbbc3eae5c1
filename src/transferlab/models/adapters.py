"""Residual bottleneck adapters (Rebuffi et al., "Learning multiple visual domains with residual adapters", 2017;
Houlsby et al., "Parameter-efficient transfer learning for NLP", 2019): ``h + up(act(down(LayerNorm(h))))``.

``up`` starts at zero, so a model with adapters inserted computes exactly what it computed before; training only
the adapters (a few per cent of the parameters) adapts a frozen encoder to a new speaker, speaker group or imaging
modality. :func:`insert_adapters` places them after the transformer layers of an ``hf:`` encoder (forward hooks, so
the Hugging Face model itself is unchanged), or on the features of any other backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class ResidualAdapter(nn.Module):
    """``h + up(GELU(down(LayerNorm(h))))`` over the last dimension; ``up`` zero-initialised (identity at start)."""

    def __init__(self, dim: int, bottleneck: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.dropout(torch.nn.functional.gelu(self.down(self.norm(h)))))


def _hook(adapter: ResidualAdapter):
    def add_adapter(module, args, output):
        if isinstance(output, tuple):  # older transformers layers return (hidden_states, attention, ...)
            return (adapter(output[0]), *output[1:])
        return adapter(output)
    return add_adapter


def insert_adapters(encoder: nn.Module, bottleneck: int, layers: list[int] | None = None) -> nn.ModuleDict:
    """Add adapters to ``encoder`` (a :class:`~transferlab.models.heads.Encoder`) and return them: after the given
    transformer layers of an ``hf:`` backbone (all when ``layers`` is None; negative indices count from the end), or
    one on the encoder's output features for any other backbone. They are registered as ``encoder.adapters``."""
    backbone = encoder.backbone
    if hasattr(backbone, "sequence") and hasattr(backbone, "layers"):
        blocks = backbone.layers()
        chosen = list(range(len(blocks))) if layers is None else [i % len(blocks) for i in layers]
        bad = [i for i in (layers or []) if not -len(blocks) <= i < len(blocks)]
        if bad:
            raise ConfigError(f"model.adapter.layers {bad}: the encoder has {len(blocks)} transformer layers "
                              f"(0..{len(blocks) - 1}, or negative from the end)")
        adapters = nn.ModuleDict({str(i): ResidualAdapter(backbone.out_features, bottleneck) for i in sorted(set(chosen))})
        for key, adapter in adapters.items():
            blocks[int(key)].register_forward_hook(_hook(adapter))
    else:
        if layers is not None:
            raise ConfigError(f"model.adapter.layers: the {type(backbone).__name__} backbone takes one adapter on its "
                              f"features; leave layers null")
        adapters = nn.ModuleDict({"features": ResidualAdapter(encoder.out_features, bottleneck)})
        encoder.register_forward_hook(_hook(adapters["features"]))
    encoder.adapters = adapters
    return adapters


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}`` parameter counts (trainable: ``requires_grad``)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}
