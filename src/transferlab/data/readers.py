"""Readers of the prepared formats that are not ``<part>.npz`` with ``x``/``y`` (docs/data.md):

* ``svmlight``: ``<part>.svmlight[.gz|.bz2]`` sparse feature vectors (the Amazon reviews), kept sparse;
* ``tsv``: ``<part>.tsv`` text with a header line naming a ``label`` and a ``text`` column and, optionally, a
  ``language`` column (the OpeNER sentences, imported text);
* ``audio``: ``<part>.npz`` with all utterances concatenated in ``audio`` (int16, or float in [-1, 1]),
  ``offsets``/``lengths`` and a scalar ``sample_rate``, plus per-utterance arrays (labels, speaker, transcript).

Each returns a dataset of :mod:`.samples`; every way a file can be broken is a :class:`DataError` naming the file,
and the line for text.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .samples import Ragged, SequenceDataset, SparseDataset, TextDataset


def _labels(where: str, raw: np.ndarray, options: dict[str, Any], num_classes: int) -> np.ndarray:
    """Stored labels -> int64 classes 0..K-1, through ``options["label_values"]`` when the file stores other values
    (Amazon reviews: -1/+1)."""
    values = options.get("label_values")
    if values is not None:
        lookup = {float(v): i for i, v in enumerate(values)}
        unknown = sorted({float(v) for v in np.unique(raw)} - set(lookup))
        if unknown:
            raise DataError(f"{where}: labels {unknown[:5]} are not among the dataset's label values {list(values)}")
        return np.asarray([lookup[float(v)] for v in raw], dtype=np.int64)
    if raw.dtype == bool:
        return raw.astype(np.int64)
    if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
        raise DataError(f"{where}: labels must be integer classes 0..{num_classes - 1}")
    if raw.dtype.kind not in "iuf":
        raise DataError(f"{where}: labels have dtype {raw.dtype}; expected integer classes 0..{num_classes - 1}")
    y = raw.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}; found {y.min()}..{y.max()}")
    return y


def read_svmlight_part(path: Path, name: str, part: str, num_classes: int, options: dict[str, Any],
                       classes: list[str] | None) -> SparseDataset:
    from .formats import read_svmlight

    x, raw = read_svmlight(path, int(options["n_features"]), options.get("zero_based", "auto"))
    y = _labels(f"{name}/{part}", raw, options, num_classes)
    return SparseDataset(y=torch.from_numpy(y), name=name, part=part, num_classes=num_classes, classes=classes,
                         extras={}, x=x)


def read_text_tsv(path: Path, name: str, part: str, num_classes: int, classes: list[str] | None,
                  language: str | None = None) -> TextDataset:
    """A TSV with a header (``label``, ``text``, optional ``language``); labels are class indices or class names."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None or "label" not in header or "text" not in header:
                raise DataError(f"{path}: the first line must name the columns, with 'label' and 'text' among them "
                                f"(tab-separated); found {header}")
            at = {column: header.index(column) for column in ("label", "text", "language") if column in header}
            texts, labels, languages = [], [], []
            names = {c: i for i, c in enumerate(classes or [])}
            for lineno, row in enumerate(reader, 2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    raise DataError(f"{path}, line {lineno}: {len(row)} columns, the header has {len(header)}")
                label, text = row[at["label"]].strip(), row[at["text"]].strip()
                if not text:
                    raise DataError(f"{path}, line {lineno}: empty text")
                if label in names:
                    value = names[label]
                else:
                    try:
                        value = int(label)
                    except ValueError:
                        raise DataError(f"{path}, line {lineno}: label {label!r} is neither a class index 0.."
                                        f"{num_classes - 1} nor a class name") from None
                if not 0 <= value < num_classes:
                    raise DataError(f"{path}, line {lineno}: label {value} outside 0..{num_classes - 1}")
                texts.append(text)
                labels.append(value)
                languages.append(row[at["language"]].strip() if "language" in at else language)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a tab-separated file ({exc})") from None
    return TextDataset(y=torch.tensor(labels, dtype=torch.long), name=name, part=part, num_classes=num_classes,
                       classes=classes, extras={}, texts=texts,
                       languages=languages if any(v is not None for v in languages) else None)


def read_audio_npz(arrays: dict[str, np.ndarray], where: str, name: str, part: str, num_classes: int,
                   options: dict[str, Any], classes: list[str] | None) -> SequenceDataset:
    """The concatenated-utterance layout -> a :class:`SequenceDataset` of float32 samples in [-1, 1] at the file's
    rate (resampling to the model's rate is the audio modality's job). The label array is ``options["label_key"]``
    (default ``y``); without it the set is unlabelled."""
    missing = [k for k in ("audio", "offsets", "lengths", "sample_rate") if k not in arrays]
    if missing:
        raise DataError(f"{where} is not an audio part: it lacks {missing} (see docs/data.md, speech layout)")
    audio, offsets, lengths = arrays.pop("audio"), arrays.pop("offsets"), arrays.pop("lengths")
    rate_array = arrays.pop("sample_rate")
    if rate_array.ndim != 0 or rate_array.dtype.kind not in "iu":
        raise DataError(f"{where}: sample_rate must be one integer (a 0-d int64 array); got {rate_array.dtype} "
                        f"{rate_array.shape}")
    rate = int(rate_array)
    if audio.ndim != 1 or audio.dtype.kind not in "if":
        raise DataError(f"{where}: audio must be one 1-D int16 or float array of all utterances; got "
                        f"{audio.dtype} {audio.shape}")
    if offsets.shape != lengths.shape or offsets.ndim != 1 or offsets.dtype.kind not in "iu" \
            or lengths.dtype.kind not in "iu":
        raise DataError(f"{where}: offsets and lengths must be two integer (N,) arrays; got {offsets.dtype} "
                        f"{offsets.shape} and {lengths.dtype} {lengths.shape}")
    offsets, lengths = offsets.astype(np.int64), lengths.astype(np.int64)
    if len(offsets) and (offsets.min() < 0 or lengths.min() < 1 or (offsets + lengths).max() > len(audio)):
        raise DataError(f"{where}: offsets/lengths point outside the audio array ({len(audio)} samples) or give an "
                        f"empty utterance")
    if rate <= 0:
        raise DataError(f"{where}: sample_rate must be positive; got {rate}")
    if audio.dtype.kind == "f" and not np.isfinite(audio).all():
        raise DataError(f"{where}: audio holds NaN or infinite samples")
    values = audio.astype(np.float32) / 32768.0 if audio.dtype.kind == "i" else audio.astype(np.float32)
    key = options.get("label_key", "y")
    y = None
    n = len(offsets)
    if key in arrays:
        raw = arrays.pop(key)
        if raw.shape != (n,):
            raise DataError(f"{where}: {key} has shape {raw.shape}; expected one label per utterance, ({n},)")
        y = torch.from_numpy(_labels(where, raw, options, num_classes))
    extras = {k: v for k, v in arrays.items() if getattr(v, "ndim", 0) >= 1 and len(v) == n}
    data = Ragged(torch.from_numpy(values), torch.from_numpy(offsets.astype(np.int64)),
                  torch.from_numpy(lengths.astype(np.int64)))
    return SequenceDataset(y=y, name=name, part=part, num_classes=num_classes, classes=classes, extras=extras,
                           data=data, kind="audio", input_key="input_values", sample_rate=rate)
