"""Datasets of the kinds that are not one dense array: sparse feature vectors, raw text, and variable-length
sequences (token ids once text is tokenised, audio waveforms).

Every dataset, :class:`~transferlab.data.datasets.ArrayDataset` included, offers the same small interface to the
streams and the engine: ``len``, ``y`` (int64 labels or ``None``), ``batch(index)`` (the model inputs of those
rows, on the CPU), ``subset(index)``, ``with_labels(y, num_classes, classes)`` and, for variable-length data,
``lengths`` (what length-bucketed sampling sorts by).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import DataError


def _index(index: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
    return torch.as_tensor(index, dtype=torch.long)


@dataclass
class Ragged:
    """Rows of different lengths in one flat tensor: row ``i`` is ``values[offsets[i] : offsets[i] + lengths[i]]``
    (the layout of the prepared speech files: all utterances concatenated)."""

    values: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def from_rows(cls, rows: list[np.ndarray] | list[list[int]], dtype: torch.dtype) -> Ragged:
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        offsets = torch.zeros_like(lengths)
        if len(rows) > 1:
            offsets[1:] = torch.cumsum(lengths, 0)[:-1]
        flat = np.concatenate([np.asarray(r) for r in rows]) if rows else np.zeros(0)
        return cls(torch.as_tensor(flat, dtype=dtype), offsets, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> torch.Tensor:
        start = int(self.offsets[i])
        return self.values[start:start + int(self.lengths[i])]

    def select(self, index: torch.Tensor) -> Ragged:
        """The chosen rows, stored compactly (offsets re-based)."""
        return Ragged.from_rows([self.row(int(i)).numpy() for i in _index(index)], self.values.dtype) if len(index) \
            else Ragged(self.values[:0], self.offsets[:0], self.lengths[:0])

    def pad(self, index: torch.Tensor, pad_value: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` as ``(len(index), L)`` padded to the longest of them, and the ``attention_mask`` (1 for
        real positions). One gather, no Python loop over rows."""
        index = _index(index)
        lengths = self.lengths[index]
        longest = int(lengths.max()) if len(index) else 0
        steps = torch.arange(longest)
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)
        positions = (self.offsets[index].unsqueeze(1) + steps.unsqueeze(0)).clamp_(max=max(len(self.values) - 1, 0))
        padded = self.values[positions] if len(self.values) else torch.zeros(mask.shape, dtype=self.values.dtype)
        padded = padded.masked_fill(~mask, pad_value)
        return padded, mask.long()


@dataclass
class _Labelled:
    """Fields every dataset kind shares."""

    y: torch.Tensor | None
    name: str
    part: str
    num_classes: int
    classes: list[str] | None
    extras: dict[str, np.ndarray]

    def _extras(self, index: torch.Tensor) -> dict[str, np.ndarray]:
        rows = index.numpy()
        n = len(self)
        return {k: v[rows] for k, v in self.extras.items() if getattr(v, "ndim", 0) >= 1 and len(v) == n}

    def with_labels(self, y: torch.Tensor | None, num_classes: int, classes: list[str] | None):
        return replace(self, y=y, num_classes=num_classes, classes=classes)

    def __len__(self) -> int:  # overridden
        raise NotImplementedError


@dataclass
class SparseDataset(_Labelled):
    """Feature vectors held as a SciPy CSR matrix (bag-of-words counts such as the Amazon reviews): rows stay sparse
    in memory and become dense float only in :meth:`batch`, for the rows of one batch.

    ``scale`` (per-feature ``(mean, std)``) is a z-score applied in :meth:`batch`, so the matrix itself stays sparse."""

    x: Any = None
    scale: tuple[np.ndarray, np.ndarray] | None = None
    kind: str = "features"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        dense = np.asarray(self.x[_index(index).numpy()].toarray(), dtype=np.float32)
        if self.scale is not None:
            mean, std = self.scale
            dense = (dense - mean) / std
        return torch.from_numpy(dense)

    def subset(self, index) -> SparseDataset:
        index = _index(index)
        return replace(self, x=self.x[index.numpy()], y=None if self.y is None else self.y[index],
                       extras=self._extras(index))


@dataclass
class TextDataset(_Labelled):
    """Raw sentences with labels and, optionally, a language tag per sentence. Not model input yet: a
    :class:`~transferlab.data.modality.Text` modality tokenises it (once, cached) into a :class:`SequenceDataset`."""

    texts: list[str] = field(default_factory=list)
    languages: list[str] | None = None
    kind: str = "text"

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index) -> TextDataset:
        index = _index(index)
        rows = index.tolist()
        return replace(self, texts=[self.texts[i] for i in rows], y=None if self.y is None else self.y[index],
                       languages=None if self.languages is None else [self.languages[i] for i in rows],
                       extras=self._extras(index))

    def batch(self, index) -> list[str]:
        raise DataError(f"{self.name}/{self.part} is raw text: tokenise it first (data.text.tokenizer, or an hf: "
                        f"backbone whose tokenizer is used)")


@dataclass
class SequenceDataset(_Labelled):
    """Variable-length samples as one :class:`Ragged`: token ids (``kind="text"``, input key ``input_ids``) or
    audio samples (``kind="audio"``, float in [-1, 1] at ``sample_rate``, input key ``input_values``).

    :meth:`batch` pads the chosen rows to the longest of them and adds the ``attention_mask`` (dynamic padding)."""

    data: Ragged = None  # type: ignore[assignment]
    kind: str = "audio"
    input_key: str = "input_values"
    pad_value: float = 0.0
    sample_rate: int | None = None
    targets: dict[str, Ragged | torch.Tensor] = field(default_factory=dict)
    """Per-sample training targets besides ``y``: a tensor (one value per sample, e.g. ``group``) or a
    :class:`Ragged` (a sequence per sample, e.g. CTC ``labels``); :meth:`batch_targets` gathers them."""

    def __len__(self) -> int:
        return len(self.data)

    @property
    def lengths(self) -> torch.Tensor:
        return self.data.lengths

    def batch(self, index) -> dict[str, torch.Tensor]:
        padded, mask = self.data.pad(index, self.pad_value)
        return {self.input_key: padded, "attention_mask": mask}

    def batch_targets(self, index) -> dict[str, torch.Tensor]:
        """The rows' targets: tensors gathered; a sequence target ``name`` padded with 0 to the longest row, with its
        lengths as ``name_lengths``."""
        index = _index(index)
        out: dict[str, torch.Tensor] = {}
        for name, value in self.targets.items():
            if isinstance(value, Ragged):
                out[name], _ = value.pad(index, 0)
                out[f"{name}_lengths"] = value.lengths[index]
            else:
                out[name] = value[index]
        return out

    def subset(self, index) -> SequenceDataset:
        index = _index(index)
        targets = {k: v.select(index) if isinstance(v, Ragged) else v[index] for k, v in self.targets.items()}
        return replace(self, data=self.data.select(index), y=None if self.y is None else self.y[index],
                       extras=self._extras(index), targets=targets)
