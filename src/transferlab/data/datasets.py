"""The dataset registry and the loader for the prepared layout.

A prepared dataset is one folder under the data root with one ``<part>.npz`` per split or domain,
each holding ``x`` (N rows, natural dtype) and ``y`` (int64 labels 0..K-1). This module knows the
datasets by name (:data:`DATASETS`; :func:`register_embedded` adds one built in memory), loads a part
as an :class:`ArrayDataset`, and turns every way a file can be missing or broken into a
:class:`~transferlab.errors.DataError` that says what to do.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .root import ENV_VAR, data_root


@dataclass(frozen=True)
class DatasetInfo:
    """What the library knows about a dataset before loading it.

    ``kind`` is what the data is (``image``, ``features``, ``text``, ``audio``); ``format`` how a part is stored
    (docs/data.md): ``npz`` (``x``/``y`` arrays), ``svmlight`` (sparse features), ``tsv`` (text) or ``audio``
    (concatenated utterances in an npz). ``options`` are the format's settings (``n_features``/``zero_based`` of
    svmlight files, ``label_values`` when labels are stored as other values, ``label_key`` of audio sets).
    ``embedded`` builds the data in memory (no files), ``downloadable`` says whether
    ``transferlab datasets download NAME`` can fetch it.
    """

    name: str
    kind: str
    num_classes: int
    parts: tuple[str, ...]
    description: str
    embedded: Callable[[str], dict[str, np.ndarray]] | None = None
    downloadable: bool = False
    format: str = "npz"
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    classes: tuple[str, ...] | None = None
    """Class names (index k = label k); ``npz`` parts may also store their own ``classes`` array."""

    def path(self, root: str | Path | None = None) -> Path:
        return data_root(root) / self.name

    def file(self, part: str, root: str | Path | None = None) -> Path:
        return self.path(root) / f"{part}{SUFFIXES[self.format]}"

    def present_parts(self, root: str | Path | None = None) -> list[str]:
        if self.embedded is not None:
            return list(self.parts)
        folder = self.path(root)
        suffix = SUFFIXES[self.format]
        return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []


SUFFIXES = {"npz": ".npz", "audio": ".npz", "tsv": ".tsv", "svmlight": ".svmlight.gz"}
MANIFEST = "dataset.json"
"""A folder under the data root with this file is a dataset known by its folder name (what ``transferlab datasets
import`` writes): ``{"kind", "format", "num_classes", "parts", "classes", "description", "options"}``."""


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.add(info.name, info)


def read_manifest(folder: Path) -> DatasetInfo:
    """The :class:`DatasetInfo` a user dataset's ``dataset.json`` describes (a bad one -> DataError saying why)."""
    import json

    path = folder / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        kind, fmt = str(meta["kind"]), str(meta.get("format", "npz"))
        parts = tuple(str(p) for p in meta["parts"])
        classes = tuple(str(c) for c in meta["classes"]) if meta.get("classes") else None
        num_classes = int(meta.get("num_classes", len(classes or ())))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a valid dataset manifest ({type(exc).__name__}: {exc}); it needs kind, "
                        f"parts and num_classes or classes. Import the data again with `transferlab datasets "
                        f"import`") from None
    if kind not in ("image", "features", "text", "audio") or fmt not in SUFFIXES or num_classes < 1 or not parts:
        raise DataError(f"{path}: kind {kind!r} / format {fmt!r} / num_classes {num_classes} / parts {parts} is not a "
                        f"valid combination (kinds: image, features, text, audio; formats: {', '.join(SUFFIXES)})")
    return DatasetInfo(folder.name, kind, num_classes, parts, str(meta.get("description", "")), format=fmt,
                       options=dict(meta.get("options", {})), classes=classes)


def lookup(name: str, root: str | Path | None = None) -> DatasetInfo:
    """A dataset by name: a registered one, or a folder ``<data root>/<name>`` with a ``dataset.json``."""
    if name in DATASETS:
        return DATASETS.get(name)
    folder = data_root(root) / name
    if (folder / MANIFEST).is_file():
        return read_manifest(folder)
    return DATASETS.get(name)  # the registry's error: unknown name, closest match, valid names


def discover(root: str | Path | None = None) -> list[DatasetInfo]:
    """The user datasets (folders with a ``dataset.json``) under the data root that are not registered."""
    base = data_root(root)
    if not base.is_dir():
        return []
    found = []
    for manifest in sorted(base.glob(f"*/{MANIFEST}")):
        if manifest.parent.name not in DATASETS:
            found.append(read_manifest(manifest.parent))
    return found


def register_embedded(name: str, make: Callable[[str], dict[str, np.ndarray]], *, num_classes: int,
                      parts: tuple[str, ...] = ("train", "test"), description: str = "",
                      kind: str = "image") -> DatasetInfo:
    """Register a dataset built in memory: ``make(part)`` returns the part's arrays (``x``, ``y`` as in a
    ``<part>.npz``) each time :func:`load` asks for it, so no file or data root is involved. ``kind`` is
    ``image`` or ``features``. Configs then name it like any other dataset (a benchmark's synthetic images).

    Registering the same name again with the same ``num_classes``, ``parts``, ``description`` and ``kind``
    returns the dataset already registered (its first ``make`` stays), so a script may call this on every
    run; a name taken by another dataset raises ``ValueError``.
    """
    info = DatasetInfo(name, kind, num_classes, tuple(parts), description, embedded=make)
    if name in DATASETS:
        registered = DATASETS.get(name)
        if registered.embedded is not None and replace(registered, embedded=make) == info:
            return registered
    return register(info)


@dataclass
class ArrayDataset:
    """A labelled (or unlabelled, ``y=None``) set held as tensors.

    ``x`` keeps the file's natural dtype and layout (uint8 ``(N,H,W)`` / ``(N,H,W,3)`` images,
    float features); a transform turns a batch of it into model input on the device, so a small
    set can live on the accelerator as compact uint8 and never touch PIL or a DataLoader.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    part: str
    num_classes: int
    classes: list[str] | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The stored rows ``index`` (a transform makes them model input)."""
        return self.x[index]

    def subset(self, index: torch.Tensor | np.ndarray) -> ArrayDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        n = len(self)
        extras = {k: v[index.numpy()] for k, v in self.extras.items() if getattr(v, "ndim", 0) >= 1 and len(v) == n}
        return ArrayDataset(
            self.x[index], None if self.y is None else self.y[index], self.name, self.part,
            self.num_classes, self.classes, extras,
        )

    def with_labels(self, y: torch.Tensor | None, num_classes: int, classes: list[str] | None) -> ArrayDataset:
        return replace(self, y=y, num_classes=num_classes, classes=classes)


def select_classes(dataset: ArrayDataset, classes: list[int | list[int]]) -> ArrayDataset:
    """The samples of ``classes`` only, relabelled ``classes[i] -> i`` (e.g. digits 5-9 as a 5-class task). An entry
    may be a list of labels merged into one class: ``[[0, 1], [2, 3]]`` turns OpeNER's strong/weak negative and
    positive into a binary task (label 4, mixed, is dropped)."""
    if dataset.y is None:
        raise DataError(f"{dataset.name}/{dataset.part} has no labels to select classes by")
    groups = [list(c) if isinstance(c, (list, tuple)) else [c] for c in classes]
    flat = [c for group in groups for c in group]
    bad = [c for c in flat if not 0 <= c < dataset.num_classes]
    if bad or len(set(flat)) != len(flat) or not classes or not all(groups):
        raise DataError(f"classes {classes} must be distinct labels (or non-empty lists of labels) in "
                        f"0..{dataset.num_classes - 1} of {dataset.name}")
    mapping = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    for i, group in enumerate(groups):
        mapping[torch.tensor(group)] = i
    keep = torch.nonzero(mapping[dataset.y] >= 0).squeeze(1)
    names = ["+".join(dataset.classes[c] if dataset.classes else str(c) for c in group) for group in groups]
    kept = dataset.subset(keep)
    return kept.with_labels(mapping[kept.y], len(classes), names)


def select_rows(dataset, where: dict[str, list] | None = None, exclude: dict[str, list] | None = None):
    """The rows whose per-sample column (an extra such as ``speaker`` or ``group``) has one of the ``where`` values
    and none of the ``exclude`` values (speaker-disjoint splits; one group). Values are compared as text, so
    ``{speaker: [3]}`` matches a column of ``"3"``."""
    keep = np.ones(len(dataset), dtype=bool)
    for rule, condition in (("where", where or {}), ("exclude", exclude or {})):
        for column, values in condition.items():
            data = dataset.extras.get(column)
            if data is None or getattr(data, "ndim", 0) != 1 or len(data) != len(dataset):
                available = sorted(k for k, v in dataset.extras.items() if getattr(v, "ndim", 0) == 1
                                   and len(v) == len(dataset))
                raise DataError(f"{rule}: {dataset.name}/{dataset.part} has no per-sample column '{column}'; its "
                                f"columns are {available or 'none'}")
            text = data.astype(str)
            wanted = np.isin(text, [str(v) for v in values])
            unknown = sorted({str(v) for v in values} - set(text.tolist()))
            if unknown:
                raise DataError(f"{rule}: {column} value(s) {unknown} do not occur in {dataset.name}/{dataset.part} "
                                f"(it has {sorted(set(text.tolist()))[:20]})")
            keep &= wanted if rule == "where" else ~wanted
    if keep.all():
        return dataset
    if not keep.any():
        raise DataError(f"where/exclude leave no rows of {dataset.name}/{dataset.part}")
    return dataset.subset(torch.from_numpy(np.nonzero(keep)[0]))


def labels_per_class(dataset: ArrayDataset, k: int, seed: int) -> ArrayDataset:
    """``k`` labelled samples of every class, drawn without replacement by ``seed`` (the few-label
    sets of the transfer protocol; the same seed always gives the same samples)."""
    if dataset.y is None:
        raise DataError(f"{dataset.name}/{dataset.part} has no labels to draw labelled samples from")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(dataset.num_classes):
        members = torch.nonzero(dataset.y == c).squeeze(1)
        if len(members) < k:
            raise DataError(f"{dataset.name}/{dataset.part} has {len(members)} samples of class {c}, fewer than "
                            f"labels_per_class={k}; lower it or use 'all'")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return dataset.subset(torch.sort(torch.cat(chosen)).values)


def _missing_message(info: DatasetInfo, path: Path, root: Path, part: str) -> str:
    hint = (
        f"run `transferlab datasets download {info.name} --data-root {root}`"
        if info.downloadable
        else "place the prepared files there (see docs/data.md for the layout)"
    )
    return (
        f"dataset '{info.name}' part '{part}' not found: {path} does not exist. "
        f"The data root is {root} (set it with --data-root or ${ENV_VAR}); {hint}."
    )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an npz file (no pickles); a truncated or corrupt file -> DataError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}). Delete it and download "
            f"or prepare it again."
        ) from None


def _check_arrays(where: str, kind: str, x: np.ndarray, y: np.ndarray) -> None:
    """Refuse arrays that would otherwise fail later with a confusing message, or be misread silently."""
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: x has dtype {x.dtype}; expected uint8 images or float features (numbers)")
    if y.ndim != 1:
        raise DataError(f"{where}: y has shape {y.shape}; expected one integer label per row, shape (N,)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: y has dtype {y.dtype}; expected integer class labels 0..K-1 (e.g. int64)")
    if kind == "features" and x.ndim != 2:
        raise DataError(f"{where}: x has shape {x.shape}; feature data is (N, D)")
    if kind == "image" and not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))):
        raise DataError(f"{where}: x has shape {x.shape}; images are grey (N, H, W) or RGB (N, H, W, 3)")


def load(name: str, part: str, root: str | Path | None = None):
    """Load one part (split or domain) of a dataset: an :class:`ArrayDataset` for images and dense features, a
    :class:`~transferlab.data.samples.SparseDataset` for svmlight features, a
    :class:`~transferlab.data.samples.TextDataset` for text, a :class:`~transferlab.data.samples.SequenceDataset`
    for audio."""
    from . import readers

    info = lookup(name, root)
    if part not in info.parts:
        raise DataError(f"dataset '{name}' has no part '{part}'. Its parts are: {', '.join(info.parts)}")
    classes = list(info.classes) if info.classes else None
    if info.embedded is not None:
        arrays = info.embedded(part)
    else:
        resolved = data_root(root)
        path = info.file(part, root)
        if not path.is_file():
            raise DataError(_missing_message(info, path, resolved, part))
        if info.format == "svmlight":
            return readers.read_svmlight_part(path, name, part, info.num_classes, info.options, classes)
        if info.format == "tsv":
            return readers.read_text_tsv(path, name, part, info.num_classes, classes, info.options.get("language"))
        arrays = read_npz(path)
        if info.format == "audio":
            return readers.read_audio_npz(arrays, str(path), name, part, info.num_classes, info.options, classes)
        if "x" not in arrays or "y" not in arrays:
            raise DataError(f"{path} must hold arrays 'x' and 'y'; it has {sorted(arrays)}")
    x, y = arrays.pop("x"), arrays.pop("y")
    _check_arrays(f"{name}/{part}", info.kind, x, y)
    y = y.astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{name}/{part}: x has {len(x)} rows but y has {len(y)}")
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        raise DataError(
            f"{name}/{part}: labels must lie in 0..{info.num_classes - 1}; found {y.min()}..{y.max()}"
        )
    classes = [str(c) for c in arrays.pop("classes")] if "classes" in arrays else classes
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), name, part, info.num_classes, classes, arrays)
