"""One small class per kind of input: what is done to a loaded dataset once (``prepare``), what is done to each
batch on the device (``transform``), and what one sample looks like to the model (``input_spec``).

* :class:`Image`: batches of stored images -> normalised float ``(B, C, size, size)`` on the device
  (:class:`~transferlab.data.transforms.ImageTransform`), optionally through a window/level or per-image
  percentile mapping to [0, 1] first (medical images).
* :class:`Features`: dense or sparse (CSR) vectors, optionally normalised per domain (``l1`` rows, or ``zscore``
  with each domain's own per-feature statistics); sparse sets become dense one batch at a time.
* :class:`Text`: any Hugging Face tokenizer (a hub name or a local folder); each dataset is tokenised **once**
  and the token ids are cached on disk, keyed by the tokenizer and the data; batches are padded to their longest
  sentence with an ``attention_mask``.
* :class:`Audio`: waveforms resampled once to the model's rate, float in [-1, 1], optionally normalised per
  utterance (zero mean, unit variance, as wav2vec2's feature extractor does) and cut to ``max_seconds``; batches
  are padded with an ``attention_mask``.

A new kind of input is one more class here with these three members (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DataError
from .samples import Ragged, SequenceDataset, SparseDataset, TextDataset
from .transforms import FeatureTransform, ImageTransform


@dataclass(frozen=True)
class InputSpec:
    """What one model input looks like, for methods that build input-shaped parts (a decoder) or
    augment inputs (SimCLR's views): ``kind`` (image, features, text, audio), ``shape`` of one sample as the model
    sees it (``()`` for variable-length text and audio), and the normalisation the transform applied (images:
    per-channel ``mean``/``std`` of ``(x - mean) / std``)."""

    kind: str
    shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


class Modality:
    """The contract: ``prepare(dataset)`` once per loaded set, ``transform`` per batch on the device (or ``None``),
    ``input_spec(dataset)``; ``variable_length`` says whether batches change shape (no CUDA graphs then)."""

    kind: str = ""
    variable_length: bool = False
    transform: Callable[[Any], Any] | None = None

    def prepare(self, dataset):
        return dataset

    def input_spec(self, dataset) -> InputSpec:
        raise NotImplementedError


@dataclass
class Image(Modality):
    channels: int = 1
    size: int = 28
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    window: tuple[float, float] | None = None
    """``(level, width)`` window in stored units mapped to [0, 1] before normalisation (``data.intensity.window``)."""
    percentile: tuple[float, float] | None = None
    """``(low, high)`` percentiles of each image mapped to [0, 1] before normalisation (``data.intensity``)."""
    kind = "image"

    def __post_init__(self) -> None:
        self.transform = ImageTransform(self.channels, self.size, self.mean, self.std, window=self.window,
                                        percentile=self.percentile)

    def input_spec(self, dataset) -> InputSpec:
        return InputSpec("image", (self.channels, self.size, self.size), self.mean, self.std)


@dataclass
class Features(Modality):
    normalize: str = "none"
    """``none``; ``l1`` (each row divided by its absolute sum: bag-of-words counts -> frequencies); ``zscore`` (each
    feature standardised with the statistics of its own domain, a simple per-domain alignment)."""
    kind = "features"

    def __post_init__(self) -> None:
        if self.normalize not in ("none", "l1", "zscore"):
            raise DataError(f"data.features.normalize must be none, l1 or zscore; got {self.normalize!r}")
        self.transform = FeatureTransform()

    def prepare(self, dataset):
        if self.normalize == "none":
            return dataset
        if isinstance(dataset, SparseDataset):
            x = dataset.x.astype(np.float32)
            if self.normalize == "l1":
                sums = np.asarray(abs(x).sum(axis=1)).ravel()
                sums[sums == 0] = 1.0
                from scipy.sparse import diags

                return replace(dataset, x=(diags(1.0 / sums) @ x).tocsr().astype(np.float32))
            mean = np.asarray(x.mean(axis=0)).ravel()
            square = np.asarray(x.multiply(x).mean(axis=0)).ravel()
            std = np.sqrt(np.maximum(square - mean ** 2, 0.0))
            return replace(dataset, scale=(mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)))
        x = dataset.x.float()
        if self.normalize == "l1":
            x = x / x.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        else:
            std = x.std(dim=0, unbiased=False)
            x = (x - x.mean(dim=0)) / std.masked_fill(std < 1e-8, 1.0)
        return replace(dataset, x=x)

    def input_spec(self, dataset) -> InputSpec:
        return InputSpec("features", (feature_dim(dataset),))


def feature_dim(dataset) -> int:
    return dataset.dim if isinstance(dataset, SparseDataset) else int(dataset.x.shape[1])


# --- text ----------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERLAB_CACHE", "~/.cache/transferlab")).expanduser()


def load_tokenizer(name_or_path: str):
    """``AutoTokenizer.from_pretrained`` for a hub name or a local folder, with an error that says what to do."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        offline = " (this machine is offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise DataError(f"cannot load the tokenizer '{name_or_path}'{offline}: {str(exc).splitlines()[0]}. Give a "
                        f"local folder with the tokenizer files (tokenizer.json or vocab files), or a hub name that is "
                        f"in the Hugging Face cache") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides the token ids: the tokenizer's full serialisation when it has one (fast
    tokenizers), else its vocabulary, plus its class and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, tokenizer.all_special_tokens, getattr(tokenizer, "padding_side", "")])
    return hashlib.sha256((body + extra).encode()).hexdigest()


def data_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class Text(Modality):
    tokenizer: Any = None
    """A loaded tokenizer (``load_tokenizer``)."""
    max_length: int = 128
    cache: bool = True
    kind = "text"
    variable_length = True
    transform = None
    last_cache_hit: bool | None = None
    """Whether the last :meth:`prepare` found its token ids in the cache (for tests and logs)."""

    def cache_path(self, dataset: TextDataset) -> Path:
        key = hashlib.sha256(f"{tokenizer_fingerprint(self.tokenizer)}|{self.max_length}|"
                             f"{data_fingerprint(dataset.texts)}".encode()).hexdigest()[:32]
        return cache_dir() / "tokens" / f"{key}.npz"

    def prepare(self, dataset):
        if not isinstance(dataset, TextDataset):
            return dataset
        path = self.cache_path(dataset) if self.cache else None
        ragged = None
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    ragged = Ragged(torch.from_numpy(stored["values"].astype(np.int64)),
                                    torch.from_numpy(stored["offsets"]), torch.from_numpy(stored["lengths"]))
            except (OSError, ValueError, KeyError):
                ragged = None  # a damaged cache entry is recomputed
        self.last_cache_hit = ragged is not None
        if ragged is None:
            encoded = self.tokenizer(dataset.texts, truncation=True, max_length=self.max_length)["input_ids"]
            ragged = Ragged.from_rows(encoded, torch.long)
            if path is not None:
                _atomic_save_npz(path, values=ragged.values.numpy().astype(np.int32), offsets=ragged.offsets.numpy(),
                                 lengths=ragged.lengths.numpy())
        extras = dict(dataset.extras)
        if dataset.languages is not None:
            extras["language"] = np.asarray(dataset.languages)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return SequenceDataset(y=dataset.y, name=dataset.name, part=dataset.part, num_classes=dataset.num_classes,
                               classes=dataset.classes, extras=extras, data=ragged, kind="text",
                               input_key="input_ids", pad_value=pad)

    def input_spec(self, dataset) -> InputSpec:
        return InputSpec("text", ())


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp, path)
    except OSError as exc:  # a cache that cannot be written only costs time
        temp.unlink(missing_ok=True)
        print(f"transferlab: could not write the token cache {path} ({exc.strerror}); continuing without it",
              file=sys.stderr)


# --- audio ---------------------------------------------------------------------------------------------------


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``wave`` from ``rate`` to ``target`` Hz with SciPy's polyphase filter (what the audio modality and the audio
    importer both use)."""
    if rate == target:
        return wave
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(target, rate)
    return resample_poly(wave, target // g, rate // g)


@dataclass
class Audio(Modality):
    sample_rate: int = 16_000
    normalize: bool = True
    max_seconds: float | None = None
    kind = "audio"
    variable_length = True
    transform = None

    def prepare(self, dataset):
        if not isinstance(dataset, SequenceDataset) or dataset.kind != "audio":
            return dataset
        data = dataset.data
        rows = None
        if dataset.sample_rate != self.sample_rate:
            rows = [resample(data.row(i).numpy(), int(dataset.sample_rate), self.sample_rate).astype(np.float32)
                    for i in range(len(data))]
        limit = int(self.max_seconds * self.sample_rate) if self.max_seconds else None
        if self.normalize or limit or rows is not None:
            rows = rows if rows is not None else [data.row(i).numpy() for i in range(len(data))]
            out = []
            for row in rows:
                row = row[:limit] if limit else row
                if self.normalize:
                    row = (row - row.mean()) / np.sqrt(row.var() + 1e-7)
                out.append(row.astype(np.float32))
            data = Ragged.from_rows(out, torch.float32)
        return replace(dataset, data=data, sample_rate=self.sample_rate)

    def input_spec(self, dataset) -> InputSpec:
        return InputSpec("audio", ())
