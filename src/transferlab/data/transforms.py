"""Batch transforms that run on the device, on whole batches (no per-sample PIL work).

:class:`ImageTransform` turns a batch of stored images (uint8 ``(B,H,W)`` / ``(B,H,W,3)`` or float
in [0,1]) into normalised float ``(B,C,size,size)`` model input, adapting grey <-> RGB; medical images may
first be mapped to [0, 1] by a window/level or by each image's own percentiles (:func:`intensity_window`,
:func:`intensity_percentile`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import DataError

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as in PIL's convert("L")


def _to_unit(x: torch.Tensor, low: torch.Tensor | float, high: torch.Tensor | float) -> torch.Tensor:
    """``(x - low) / (high - low)`` clipped to [0, 1], in float32. Where ``high == low`` (a constant image) the
    width is the smallest positive float: values equal to ``low`` map to 0, values above to 1, never NaN."""
    x = x.float()
    width = high - low
    if isinstance(width, torch.Tensor):
        width = width.clamp_min(torch.finfo(torch.float32).tiny)
    return (x - low).div_(width).clamp_(0.0, 1.0)


def intensity_window(x: torch.Tensor, level: float, width: float) -> torch.Tensor:
    """Window/level: stored value ``level - width/2`` -> 0, ``level + width/2`` -> 1, linear between, clipped."""
    if not width > 0:
        raise ValueError(f"the window width must be positive; got {width}")
    return _to_unit(x, level - width / 2, level + width / 2)


_SORT_ELEMENTS = 1 << 24
"""Images are sorted this many values at a time (about 150 MB with the int64 indices ``sort`` also returns)."""


def _order_statistic(ordered: torch.Tensor, position: float) -> torch.Tensor:
    """Per sorted row, the value at 0-based ``position``, interpolated linearly between its neighbours (numpy's
    default percentile method), as float32 ``(B,)``."""
    below = math.floor(position)
    fraction = position - below
    low = ordered[:, below].float()
    if fraction == 0.0:
        return low
    return low + (ordered[:, below + 1].float() - low) * fraction


def intensity_percentile(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Each image's ``low`` and ``high`` percentiles (over all its pixels and channels) -> 0 and 1, clipped; ``x`` is
    ``(B, ...)`` in any real dtype. A constant image maps to 0 (no NaN)."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100 percentiles; got {low}, {high}")
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    if n == 0:
        return x.float()
    lower, upper = [], []
    rows = max(1, _SORT_ELEMENTS // n)
    for start in range(0, flat.shape[0], rows):  # sort, not kthvalue: deterministic on every device and version
        ordered = flat[start:start + rows].sort(dim=1).values
        lower.append(_order_statistic(ordered, low / 100 * (n - 1)))
        upper.append(_order_statistic(ordered, high / 100 * (n - 1)))
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return _to_unit(x, torch.cat(lower).view(shape), torch.cat(upper).view(shape))


@dataclass(frozen=True)
class ImageTransform:
    """Scale to [0,1], resize to ``size`` (bilinear), adapt channels, normalise by ``mean``/``std``.

    Grey -> RGB repeats the channel (what a backbone pretrained on RGB expects); RGB -> grey takes
    BT.601 luma. ``size=None`` keeps the stored resolution.

    ``window`` or ``percentile`` replaces the first step (uint8 / 255): the stored values are mapped to [0, 1] by a
    window/level in stored units or by each image's own percentiles, at the stored resolution and channels (so
    percentiles are of the pixels as stored, and an RGB image's channels share one mapping); resizing, channel
    adaptation and normalisation follow.
    """

    channels: int = 1
    size: int | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels_last: bool = True
    """Return NHWC-strided tensors: oneDNN/cuDNN convolutions run faster on them (measured 1.5x for LeNet on CPU)."""
    window: tuple[float, float] | None = None
    """``(level, width)`` in stored units: ``level - width/2`` -> 0, ``level + width/2`` -> 1, clipped."""
    percentile: tuple[float, float] | None = None
    """``(low, high)``: each image's own percentiles (linear interpolation, numpy's default) -> 0 and 1, clipped."""
    deterministic: ClassVar[bool] = True
    """Same input, same output: a training stream may apply it to the whole set ahead of time."""
    _constants: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """Mean/std/luma as device tensors, made once per (device, dtype): ``torch.tensor(..., device=cuda)`` on
    every batch would be a blocking host-to-device copy, i.e. a host sync in every training step."""

    def __post_init__(self) -> None:
        if self.window is not None and self.percentile is not None:
            raise ValueError("give an ImageTransform a window or a percentile mapping, not both")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"window (level, width) {self.window}: the width must be positive")
        if self.percentile is not None and not 0 <= self.percentile[0] < self.percentile[1] <= 100:
            raise ValueError(f"percentile (low, high) {self.percentile}: need 0 <= low < high <= 100")

    def _constant(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        key = (values, like.device, like.dtype)
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=like.dtype).view(1, -1, 1, 1).to(like.device)
        return self._constants[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B,H,W) grey
            x = x.unsqueeze(1)
        elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (B,H,W,C)
            x = x.permute(0, 3, 1, 2)
        elif x.dim() != 4:
            raise DataError(f"expected image batches of shape (B,H,W) or (B,H,W,C); got {tuple(x.shape)}")
        if self.window is not None:
            x = intensity_window(x, *self.window)
        elif self.percentile is not None:
            x = intensity_percentile(x, *self.percentile)
        elif x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        else:
            x = x.float()
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif x.shape[1] == 3 and self.channels == 1:
                luma = self._constant(_LUMA, x)
                x = (x * luma).sum(dim=1, keepdim=True)
            else:
                raise DataError(f"cannot adapt {x.shape[1]} input channels to {self.channels}")
        x = (x - self._constant(self.mean, x)) / self._constant(self.std, x)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


@dataclass(frozen=True)
class FeatureTransform:
    """Pre-extracted feature vectors: cast to float; nothing else."""

    deterministic: ClassVar[bool] = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()
