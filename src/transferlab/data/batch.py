"""What a training or evaluation step receives: a :class:`Batch` of model inputs and targets, for any kind of data.

``x`` is whatever the model takes: an image or feature tensor ``(B, ...)``, or a dict of tensors for text
(``input_ids``, ``attention_mask``) and audio (``input_values``, ``attention_mask``), padded to the longest
sample of the batch. Methods never look inside it: they pass it to the encoder, and join two domains'
batches with :func:`concat_inputs`, which pads dict inputs of different lengths to a common one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

Inputs = Any
"""A tensor, or a dict of tensors whose first dimension is the batch."""


def batch_size_of(inputs: Inputs) -> int:
    if isinstance(inputs, dict):
        return int(next(iter(inputs.values())).shape[0])
    return int(inputs.shape[0])


def to_device(inputs: Inputs, device: torch.device | str, non_blocking: bool = True) -> Inputs:
    if isinstance(inputs, dict):
        return {key: value.to(device, non_blocking=non_blocking) for key, value in inputs.items()}
    return inputs.to(device, non_blocking=non_blocking)


def _pad_last(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dim 1 (the sequence) with zeros to ``length``: padding is masked out by ``attention_mask``, and
    zero is also the padding of ``input_values`` (silence) and of an attention mask (not attended)."""
    missing = length - tensor.shape[1]
    if missing <= 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 2) + [0, missing]
    return F.pad(tensor, pad)


def concat_inputs(a: Inputs, b: Inputs) -> Inputs:
    """Join two model inputs along the batch dimension. Dict inputs (padded sequences) of different lengths are
    padded to the longer one first, so a source and a target batch can be encoded as one batch."""
    if isinstance(a, dict):
        if set(a) != set(b):
            raise ValueError(f"cannot join inputs with keys {sorted(a)} and {sorted(b)}")
        out = {}
        for key in a:
            x, y = a[key], b[key]
            if x.dim() >= 2 and x.shape[1] != y.shape[1]:
                length = max(x.shape[1], y.shape[1])
                x, y = _pad_last(x, length), _pad_last(y, length)
            out[key] = torch.cat([x, y])
        return out
    return torch.cat([a, b])


def _cat_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Targets of two batches joined; sequence targets (CTC labels) padded with 0 to the longer one first."""
    if a.dim() >= 2 and a.shape[1] != b.shape[1]:
        length = max(a.shape[1], b.shape[1])
        a, b = _pad_last(a, length), _pad_last(b, length)
    return torch.cat([a, b])


def split_inputs(inputs: Inputs, n: int) -> tuple[Inputs, Inputs]:
    """The first ``n`` samples and the rest (the inverse of :func:`concat_inputs`, padding kept)."""
    if isinstance(inputs, dict):
        return {k: v[:n] for k, v in inputs.items()}, {k: v[n:] for k, v in inputs.items()}
    return inputs[:n], inputs[n:]


@dataclass
class Batch:
    """One domain's mini-batch: model inputs ``x``, int64 class labels ``y`` (``None`` for unlabelled data) and any
    other per-sample targets in ``targets`` (e.g. ``speaker``, ``language``, CTC ``labels`` with ``label_lengths``)."""

    x: Inputs
    y: torch.Tensor | None = None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def inputs(self) -> Inputs:
        return self.x

    def __len__(self) -> int:
        return len(self.y) if self.y is not None else batch_size_of(self.x)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(to_device(self.x, device), None if self.y is None else self.y.to(device, non_blocking=True),
                     {k: v.to(device, non_blocking=True) for k, v in self.targets.items()})

    @staticmethod
    def concat(a: Batch, b: Batch) -> Batch:
        y = torch.cat([a.y, b.y]) if a.y is not None and b.y is not None else None
        shared = set(a.targets) & set(b.targets)
        return Batch(concat_inputs(a.x, b.x), y, {k: _cat_padded(a.targets[k], b.targets[k]) for k in shared})

    def split(self, n: int) -> tuple[Batch, Batch]:
        x1, x2 = split_inputs(self.x, n)
        y1, y2 = (None, None) if self.y is None else (self.y[:n], self.y[n:])
        return (Batch(x1, y1, {k: v[:n] for k, v in self.targets.items()}),
                Batch(x2, y2, {k: v[n:] for k, v in self.targets.items()}))
