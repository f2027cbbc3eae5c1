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

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .root import ENV_VAR, data_root


@dataclass(frozen=True)
class DatasetInfo:
    """What the library knows about a dataset before loading it.

    ``kind`` tells which loader applies: ``image`` and ``features`` sets are ``<part>.npz`` files
    with ``x``/``y``; ``audio`` and ``text`` sets keep the formats described in docs/data.md.
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

    def path(self, root: str | Path | None = None) -> Path:
        return data_root(root) / self.name

    def present_parts(self, root: str | Path | None = None) -> list[str]:
        if self.embedded is not None:
            return list(self.parts)
        folder = self.path(root)
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.add(info.name, info)


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

    def subset(self, index: torch.Tensor | np.ndarray) -> ArrayDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return ArrayDataset(
            self.x[index], None if self.y is None else self.y[index], self.name, self.part,
            self.num_classes, self.classes,
        )


def select_classes(dataset: ArrayDataset, classes: list[int]) -> ArrayDataset:
    """The samples of ``classes`` only, relabelled ``classes[i] -> i`` (e.g. digits 5-9 as a 5-class task)."""
    if dataset.y is None:
        raise DataError(f"{dataset.name}/{dataset.part} has no labels to select classes by")
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise DataError(f"classes {classes} must be distinct labels in 0..{dataset.num_classes - 1} "
                        f"of {dataset.name}")
    mapping = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    mapping[torch.tensor(classes)] = torch.arange(len(classes))
    keep = torch.nonzero(mapping[dataset.y] >= 0).squeeze(1)
    names = [dataset.classes[c] for c in classes] if dataset.classes else [str(c) for c in classes]
    return ArrayDataset(dataset.x[keep], mapping[dataset.y[keep]], dataset.name, dataset.part, len(classes), names)


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


def _missing_message(info: DatasetInfo, path: Path, root: Path) -> str:
    hint = (
        f"run `transferlab datasets download {info.name} --data-root {root}`"
        if info.downloadable
        else "place the prepared files there (see docs/data.md for the layout)"
    )
    return (
        f"dataset '{info.name}' part '{path.stem}' not found: {path} does not exist. "
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


def load(name: str, part: str, root: str | Path | None = None) -> ArrayDataset:
    """Load one part (split or domain) of a registered dataset as an :class:`ArrayDataset`."""
    info = DATASETS.get(name)
    if info.kind not in ("image", "features"):
        raise DataError(f"dataset '{name}' is {info.kind} data; load it with the {info.kind} loaders")
    if part not in info.parts:
        raise DataError(f"dataset '{name}' has no part '{part}'. Its parts are: {', '.join(info.parts)}")
    if info.embedded is not None:
        arrays = info.embedded(part)
    else:
        resolved = data_root(root)
        path = resolved / name / f"{part}.npz"
        if not path.is_file():
            raise DataError(_missing_message(info, path, resolved))
        arrays = read_npz(path)
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
    classes = [str(c) for c in arrays.pop("classes")] if "classes" in arrays else None
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), name, part, info.num_classes, classes, arrays)
