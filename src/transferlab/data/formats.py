"""Readers for the upstream file formats of the digit datasets, and their conversion to the arrays
of a prepared part (``x``, and ``y`` int64 in 0..K-1; see docs/data.md).

IDX (MNIST, optionally gzip-compressed), svmlight (the LIBSVM USPS files, optionally bz2), MATLAB v5
``.mat`` (SVHN) and the original MNIST-M distribution (PNG images and ``<file name> <label>`` lists, in
a folder or a tar archive). A malformed file raises :class:`~transferlab.errors.DataError` naming it.
Nothing here touches the network or writes files: :mod:`transferlab.data.download` fetches the files
and writes what these functions return.
"""

from __future__ import annotations

import bz2
import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transferlab.errors import DataError


def _check_part(name: str, source: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    if len(x) != len(y):
        raise DataError(f"{name}: {source} has {len(x)} samples but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{name}: {source} contains no samples")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"{name}: {source} has labels outside 0..{num_classes - 1} "
            f"(min {y.min()}, max {y.max()})"
        )


# --------------------------------------------------------------------------------------------
# MNIST (IDX)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Format: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the data in row-major order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file has {len(data) - header} bytes after the header"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def convert_mnist_idx(images_path: Path, labels_path: Path) -> dict[str, np.ndarray]:
    """IDX image + label files -> ``{"x": uint8 (N,28,28), "y": int64 (N,)}``."""
    x = read_idx(images_path)
    y = read_idx(labels_path)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected uint8 images (N,28,28), got {x.dtype} {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-d label file, got shape {y.shape}")
    y = y.astype(np.int64)
    _check_part("mnist", f"{images_path.name} / {labels_path.name}", x, y, 10)
    return {"x": np.ascontiguousarray(x), "y": y}


# --------------------------------------------------------------------------------------------
# USPS (LIBSVM svmlight, bz2)
# --------------------------------------------------------------------------------------------


def read_svmlight(path: Path, n_features: int, zero_based: bool | str = False):
    """Read an svmlight/LIBSVM file (plain, ``.gz`` or ``.bz2``) as a SciPy CSR matrix ``(N, n_features)`` and
    float labels ``(N,)``, with scikit-learn's compiled parser. ``zero_based``: whether feature indices start at
    0 (the Amazon reviews), at 1 (``False``, LIBSVM's convention, USPS), or ``"auto"`` (0-based if any index is 0).
    A malformed file, an index out of range or an unreadable archive -> :class:`DataError`."""
    from sklearn.datasets import load_svmlight_file

    path = Path(path)
    try:
        x, y = load_svmlight_file(str(path), n_features=n_features, zero_based=zero_based, dtype=np.float32)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, RuntimeError) as exc:
        base = "0" if zero_based is True else "1" if zero_based is False else "0 or 1"
        raise DataError(f"cannot read svmlight file {path}: {exc}. Expected lines 'label index:value ...' with "
                        f"feature indices from {base} up to {n_features} features") from None
    return x.tocsr(), np.asarray(y, dtype=np.float64)


def convert_usps_svmlight(path: Path) -> dict[str, np.ndarray]:
    """LIBSVM USPS file -> ``{"x": float32 (N,16,16) in [0,1], "y": int64 (N,)}``.

    Upstream labels are 1..10 (digit + 1) and features lie in [-1, 1]; x = (v + 1) / 2.
    """
    values, labels = read_svmlight(path, 256)
    values = values.toarray().astype(np.float64)
    if labels.size and not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{path}: USPS labels must be integers 1..10")
    y = labels.astype(np.int64) - 1
    _check_part("usps", Path(path).name, values, y, 10)
    if values.min() < -1 - 1e-6 or values.max() > 1 + 1e-6:
        raise DataError(
            f"{path}: USPS features must lie in [-1, 1] (min {values.min()}, max {values.max()})"
        )
    x = np.clip((values + 1.0) / 2.0, 0.0, 1.0).astype(np.float32).reshape(-1, 16, 16)
    return {"x": x, "y": y}


# --------------------------------------------------------------------------------------------
# SVHN (cropped digits, MATLAB v5)
# --------------------------------------------------------------------------------------------


def convert_svhn_mat(path: Path) -> dict[str, np.ndarray]:
    """SVHN ``*_32x32.mat`` -> ``{"x": uint8 (N,32,32,3) RGB, "y": int64 (N,)}``.

    Upstream X is (32,32,3,N) and y is (N,1) with 1..10, where 10 means digit 0.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises several exception types for damaged files
        raise DataError(f"cannot read SVHN MATLAB file {path}: {exc}") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: expected variables 'X' and 'y'")
    X, labels = mat["X"], mat["y"]
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: expected X of shape (32,32,3,N), got {X.shape}")
    if X.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 X, got {X.dtype}")
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: SVHN labels must be 1..10, got {y.min()}..{y.max()}")
    y[y == 10] = 0
    x = np.ascontiguousarray(X.transpose(3, 0, 1, 2))
    _check_part("svhn", Path(path).name, x, y, 10)
    return {"x": x, "y": y}


# --------------------------------------------------------------------------------------------
# MNIST-M (PNG images and label lists, in a folder or a tar archive)
# --------------------------------------------------------------------------------------------

MNIST_M_SPLITS = ("train", "test")


def _decode_png_rgb(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises several types for damaged images
        raise DataError(f"cannot decode image {where}: {exc}") from exc
    if array.shape != (32, 32, 3):
        raise DataError(f"{where}: expected a 32x32 RGB image, got shape {array.shape}")
    return array


def _parse_mnist_m_labels(text: str, where: str) -> dict[str, int]:
    labels: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{where}, line {lineno}: expected '<file name> <label>', got {line!r}")
        labels[parts[0]] = int(parts[1])
    return labels


def _iter_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(posix path, bytes) of every regular file in a folder or a tar archive, in one pass.

    Archive members are read sequentially in place (never extracted to disk), which keeps a
    compressed tar at one decompression pass.
    """
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                yield path.relative_to(source).as_posix(), path.read_bytes()
        return
    try:
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    f = archive.extractfile(member)
                    if f is not None:
                        yield member.name, f.read()
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise DataError(f"cannot read MNIST-M archive {source}: {exc}") from exc


def convert_mnist_m(source: Path) -> dict[str, dict[str, np.ndarray]]:
    """Original MNIST-M distribution (folder or tar archive) -> one part per split.

    Expects ``mnist_m_<split>/*.png`` and ``mnist_m_<split>_labels.txt`` (``<file> <label>`` per
    line) side by side, for split train and test, at any depth. Each part: ``x`` uint8
    (N,32,32,3) RGB, ``y`` int64 (N,), ``names`` str (N,), sorted by file name; every image must
    have a label and every label an image.
    """
    source = Path(source)
    label_names = {f"mnist_m_{s}_labels.txt": s for s in MNIST_M_SPLITS}
    image_dirs = {f"mnist_m_{s}": s for s in MNIST_M_SPLITS}
    labels: dict[tuple[str, str], dict[str, int]] = {}
    images: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for name, data in _iter_files(source):
        folder, _, base = name.rpartition("/")
        if base in label_names:
            key = (folder, label_names[base])
            labels[key] = _parse_mnist_m_labels(data.decode("ascii", "replace"), name)
            continue
        parent, _, dirname = folder.rpartition("/")
        if dirname in image_dirs and base.lower().endswith(".png") and not base.startswith("."):
            images.setdefault((parent, image_dirs[dirname]), {})[base] = _decode_png_rgb(data, name)

    prefixes = sorted({p for (p, _) in labels} | {p for (p, _) in images})
    complete = [p for p in prefixes if all((p, s) in labels for s in MNIST_M_SPLITS)]
    if len(complete) != 1:
        found = ", ".join(
            f"{p}/{n}" if p else n
            for p in prefixes
            for n, s in label_names.items()
            if (p, s) in labels
        )
        raise DataError(
            f"{source}: expected one folder with both mnist_m_train_labels.txt and "
            f"mnist_m_test_labels.txt next to mnist_m_train/ and mnist_m_test/; "
            f"found label files: {found or 'none'}"
        )
    prefix = complete[0]
    parts: dict[str, dict[str, np.ndarray]] = {}
    for split in MNIST_M_SPLITS:
        split_labels = labels[(prefix, split)]
        split_images = images.get((prefix, split), {})
        missing = sorted(set(split_labels) - set(split_images))
        unlabeled = sorted(set(split_images) - set(split_labels))
        if missing or unlabeled:
            raise DataError(
                f"{source}: split {split}: {len(missing)} labelled files have no image "
                f"(e.g. {missing[:3]}), {len(unlabeled)} images have no label "
                f"(e.g. {unlabeled[:3]})"
            )
        names = sorted(split_images)
        if not names:
            raise DataError(f"{source}: split {split} has no images")
        x = np.stack([split_images[n] for n in names])
        y = np.asarray([split_labels[n] for n in names], dtype=np.int64)
        _check_part("mnist_m", f"{source} ({split})", x, y, 10)
        parts[split] = {"x": x, "y": y, "names": np.asarray(names, dtype=str)}
    return parts
