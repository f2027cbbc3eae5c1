"""Download digit datasets from their public sources and convert them to the prepared layout.

Every downloaded file is checked against a pinned sha256 before it is used. The prepared layout
is the one described in docs/data.md: ``<root>/<name>/<part>.npz`` written with
``numpy.savez_compressed``, keys ``x`` and ``y`` (int64, classes 0..K-1), no pickled objects.
Downloaded upstream files are kept in ``<root>/<name>/raw/`` (loaders ignore that folder), so a
second run does not download them again.

Where each pinned sha256 comes from is noted next to it. Sources:

* ``mnist``: the LeCun IDX files from the torchvision mirror (fallback: the CVDF mirror).
* ``usps``: the LIBSVM copies (svmlight format, labels 1..10, 256 features in [-1, 1]).
* ``svhn``: the cropped-digit MATLAB files from the SVHN site.
* ``mnist_m``: no pinned public source (see :func:`download_mnist_m`); an archive or folder that
  the user obtained is converted from ``<root>/mnist_m/raw/``.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import io
import os
import secrets
import ssl
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO

import numpy as np

from transferlab.errors import DataError

#: Seconds to wait for a server to answer (per connection attempt and per read).
TIMEOUT_S = 60
_CHUNK = 1 << 20
_USER_AGENT = "transferlab-downloader/0.1 (+python-urllib)"
_ROOT_HINT = (
    "Alternatively, prepare the data elsewhere and place it under the data root "
    "(set TRANSFERLAB_DATA or pass --data-root) in the prepared layout "
    "<root>/<name>/<part>.npz (see docs/data.md)."
)


@dataclass(frozen=True)
class Resource:
    """One upstream file: where to get it, its sha256, and the name to store it under.

    ``mirrors`` are tried in order after ``url`` when ``url`` cannot be downloaded or serves
    different bytes; every copy must have the same sha256.
    """

    url: str
    sha256: str
    filename: str
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


# --------------------------------------------------------------------------------------------
# Pinned sources (data only; nothing here changes at run time).
# --------------------------------------------------------------------------------------------

_MNIST_PRIMARY = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"


def _mnist(filename: str, sha256: str) -> Resource:
    return Resource(_MNIST_PRIMARY + filename, sha256, filename, (_MNIST_MIRROR + filename,))


# sha256 of the canonical LeCun files as listed in TensorFlow Datasets'
# tensorflow_datasets/url_checksums/mnist.txt (same files on the CVDF mirror); the three files
# present in the shared data root (raw/t10k-*, raw/train-labels-*) were also hashed locally.
MNIST_RESOURCES: Mapping[str, Resource] = MappingProxyType(
    {
        "train_images": _mnist(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train_labels": _mnist(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "test_images": _mnist(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "test_labels": _mnist(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    }
)

_LIBSVM_MULTICLASS = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"

# sha256 as pinned by torchvision's prototype USPS dataset
# (torchvision/prototype/datasets/_builtin/usps.py). torchvision's stable USPS lists the md5s
# ec16c51db3855ca6c91edd34d0e9b197 (usps.bz2) and 8ea070ee2aca1ac39742fdd1ef5ed118 (usps.t.bz2).
USPS_RESOURCES: Mapping[str, Resource] = MappingProxyType(
    {
        "train": Resource(
            _LIBSVM_MULTICLASS + "usps.bz2",
            "3771e9dd6ba685185f89867b6e249233dd74652389f263963b3b741e994b034f",
            "usps.bz2",
        ),
        "test": Resource(
            _LIBSVM_MULTICLASS + "usps.t.bz2",
            "a9c0164e797d60142a50604917f0baa604f326e9a689698763793fa5d12ffc4e",
            "usps.t.bz2",
        ),
    }
)

_SVHN_BASE = "http://ufldl.stanford.edu/housenumbers/"

# sha256 as listed in TensorFlow Datasets' tensorflow_datasets/url_checksums/svhn_cropped.txt
# (train 182,040,794 bytes, test 64,275,384 bytes) and torchvision's prototype SVHN dataset.
# The site is plain http, so the pinned sha256 is what authenticates the bytes.
SVHN_RESOURCES: Mapping[str, Resource] = MappingProxyType(
    {
        "train": Resource(
            _SVHN_BASE + "train_32x32.mat",
            "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
            "train_32x32.mat",
        ),
        "test": Resource(
            _SVHN_BASE + "test_32x32.mat",
            "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
            "test_32x32.mat",
        ),
    }
)


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create folder {path}: {exc}") from exc


def _open_temp(folder: Path, name: str, suffix: str) -> tuple[Path, IO[bytes]]:
    """Create and open a new, uniquely named hidden file in ``folder`` (mode from the umask).

    The name starts with a dot and ends with ``suffix`` (never ``.npz``), so globs for finished
    files do not see it.
    """
    for _ in range(100):
        path = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
        try:
            return path, open(path, "xb")
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")


# Failures of the transfer itself: URLError/HTTPError (including refused connections and
# unknown hosts), broken connections, timeouts, malformed HTTP, and ValueError for a URL that
# urllib cannot parse. Other OSErrors come from the local disk and are reported as such.
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ssl.SSLError,
    ConnectionError,
    TimeoutError,
    ValueError,
)


def _download_to(url: str, f: IO[bytes], *, progress: bool, desc: str) -> str:
    """Stream ``url`` into the open file ``f``; return the sha256 of what was written."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress, leave=False,
        ) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def fetch(resource: Resource, dest_dir: Path, *, progress: bool = True) -> Path:
    """Download ``resource`` to ``dest_dir/resource.filename`` and verify its sha256.

    A file that is already there with the right sha256 is used as is (no download); a file with
    a different sha256 is replaced. The download goes to a temporary file in ``dest_dir`` that is
    renamed into place only after its sha256 matched, so a failed or interrupted download never
    leaves a file under the final name. Each of ``resource.urls`` is tried in order.

    Raises :class:`DataError` when no URL gives the expected bytes: on a checksum mismatch the
    message names the URL and both hashes; on a network failure it says that the machine may be
    offline and how to provide the data by hand.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / resource.filename
    expected = resource.sha256.lower()
    if target.is_file() and sha256_file(target) == expected:
        return target
    _make_dir(dest_dir)

    mismatches: list[str] = []
    network: list[str] = []
    for url in resource.urls:
        tmp: Path | None = None
        try:
            tmp, f = _open_temp(dest_dir, resource.filename, ".part")
            with f:
                actual = _download_to(url, f, progress=progress, desc=resource.filename)
                f.flush()
                os.fsync(f.fileno())
            if actual != expected:
                mismatches.append(f"  {url}: expected sha256 {expected}, actual sha256 {actual}")
                continue
            os.replace(tmp, target)
            return target
        except _NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc
            network.append(f"  {url}: {type(exc).__name__}: {reason}")
        except OSError as exc:  # not a network error: the local disk or folder
            raise DataError(
                f"cannot write {resource.filename} into {dest_dir}: {exc}. "
                "Check that the folder is writable and the disk is not full."
            ) from exc
        finally:
            if tmp is not None:
                _remove_quietly(tmp)

    manual = (
        f"You can also download {resource.filename} yourself, check that its sha256 is "
        f"{expected}, and put it at {target}."
    )
    if mismatches:
        lines = "\n".join(mismatches + network)
        raise DataError(
            f"checksum mismatch for {resource.filename}; the downloaded bytes were discarded:\n"
            f"{lines}\n"
            "The server may serve a changed or corrupted file, or a proxy may have altered it. "
            "Try again later; if the mismatch persists, do not use this file and report it. "
            f"{manual} {_ROOT_HINT}"
        )
    lines = "\n".join(network)
    raise DataError(
        f"could not download {resource.filename}:\n{lines}\n"
        "The machine may be offline, or the server may be unreachable or have moved the file. "
        f"{manual} {_ROOT_HINT}"
    )


# --------------------------------------------------------------------------------------------
# Writing prepared parts
# --------------------------------------------------------------------------------------------


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` with ``numpy.savez_compressed`` via a temp file + os.replace.

    Refuses object arrays, so the result always loads with ``allow_pickle=False``.
    """
    path = Path(path)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"array {key!r} has dtype object; it would need pickling")
    _make_dir(path.parent)
    # The temp name does not end in .npz, so a glob("*.npz") never sees a half-written part.
    try:
        tmp, f = _open_temp(path.parent, path.name, ".tmp")
    except OSError as exc:
        raise DataError(f"cannot write into {path.parent}: {exc}") from exc
    try:
        with f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(
            f"cannot write {path}: {exc}. Check that the folder is writable and the disk is not "
            "full."
        ) from exc
    finally:
        _remove_quietly(tmp)
    return path


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


def download_mnist(root: Path) -> None:
    """Download the LeCun IDX files and write ``<root>/mnist/{train,test}.npz``."""
    out = Path(root) / "mnist"
    raw = out / "raw"
    res = MNIST_RESOURCES
    paths = {key: fetch(r, raw) for key, r in res.items()}
    for part in ("train", "test"):
        arrays = convert_mnist_idx(paths[f"{part}_images"], paths[f"{part}_labels"])
        save_npz_atomic(out / f"{part}.npz", **arrays)


# --------------------------------------------------------------------------------------------
# USPS (LIBSVM svmlight, bz2)
# --------------------------------------------------------------------------------------------


def read_svmlight(path: Path, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse a (optionally bz2-compressed) svmlight file with 1-based feature indices.

    Returns dense float64 features (N, n_features), missing features 0, and float labels (N,).
    """
    path = Path(path)
    opener = bz2.open if path.suffix == ".bz2" else open
    rows: list[np.ndarray] = []
    labels: list[float] = []
    try:
        with opener(path, "rt", encoding="ascii") as f:
            for lineno, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                tokens = line.split()
                row = np.zeros(n_features, dtype=np.float64)
                try:
                    labels.append(float(tokens[0]))
                    for token in tokens[1:]:
                        index, value = token.split(":", 1)
                        i = int(index)
                        if not 1 <= i <= n_features:
                            raise ValueError(f"feature index {i} outside 1..{n_features}")
                        row[i - 1] = float(value)
                except ValueError as exc:
                    raise DataError(f"{path}, line {lineno}: not svmlight ({exc})") from exc
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read svmlight file {path}: {exc}") from exc
    x = np.stack(rows) if rows else np.zeros((0, n_features))
    return x, np.asarray(labels, dtype=np.float64)


def convert_usps_svmlight(path: Path) -> dict[str, np.ndarray]:
    """LIBSVM USPS file -> ``{"x": float32 (N,16,16) in [0,1], "y": int64 (N,)}``.

    Upstream labels are 1..10 (digit + 1) and features lie in [-1, 1]; x = (v + 1) / 2.
    """
    values, labels = read_svmlight(path, 256)
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


def download_usps(root: Path) -> None:
    """Download the LIBSVM USPS files and write ``<root>/usps/{train,test}.npz``."""
    out = Path(root) / "usps"
    for part, resource in USPS_RESOURCES.items():
        path = fetch(resource, out / "raw")
        save_npz_atomic(out / f"{part}.npz", **convert_usps_svmlight(path))


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


def download_svhn(root: Path) -> None:
    """Download the cropped SVHN files and write ``<root>/svhn/{train,test}.npz``."""
    out = Path(root) / "svhn"
    for part, resource in SVHN_RESOURCES.items():
        path = fetch(resource, out / "raw")
        save_npz_atomic(out / f"{part}.npz", **convert_svhn_mat(path))


# --------------------------------------------------------------------------------------------
# MNIST-M (no pinned download; convert what the user placed under raw/)
# --------------------------------------------------------------------------------------------

MNIST_M_SPLITS = ("train", "test")
_MNIST_M_HELP = """\
MNIST-M has no download with a checksum that could be pinned: the authors' original link is
gone, the widely used copy of the fungtion/DANN distribution (mnist_m.tar.gz) is on Google
Drive, and the PyTorch re-distribution liyxi/mnist-m is a different, re-generated 28x28 set
with only md5 checksums. To use MNIST-M, do one of the following:
  1. Put prepared files at {out}/train.npz and {out}/test.npz: numpy.savez_compressed with
     x uint8 (N,32,32,3) RGB, y int64 (N,) digits 0..9 (see docs/data.md).
  2. Or put the original distribution in {raw}: either the archive mnist_m.tar.gz or its
     extracted folder mnist_m/ with mnist_m_train/*.png, mnist_m_train_labels.txt,
     mnist_m_test/*.png and mnist_m_test_labels.txt (one "<file name> <label>" per line;
     the GitHub repository ShichengChen/Domain-Adversarial-Training-of-Neural-Networks,
     folder mnist_m/, holds the same files), then run the download again to convert them.
The data root is set with TRANSFERLAB_DATA or --data-root."""


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


def download_mnist_m(root: Path) -> None:
    """Convert a user-provided MNIST-M distribution in ``<root>/mnist_m/raw/``.

    There is no pinned public download (see the error message), so this looks for
    ``raw/mnist_m/`` (extracted) or ``raw/mnist_m.tar.gz`` and otherwise raises
    :class:`DataError` explaining how to provide the data.
    """
    out = Path(root) / "mnist_m"
    raw = out / "raw"
    candidates = [raw / "mnist_m", raw / "mnist_m.tar.gz", raw / "mnist_m.tar"]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise DataError(_MNIST_M_HELP.format(out=out, raw=raw))
    for split, arrays in convert_mnist_m(source).items():
        save_npz_atomic(out / f"{split}.npz", **arrays)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

#: name -> function(root) that writes ``<root>/<name>/<part>.npz``.
DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "mnist": download_mnist,
    "usps": download_usps,
    "mnist_m": download_mnist_m,
    "svhn": download_svhn,
}


def download(name: str, root: Path) -> Path:
    """Download dataset ``name`` into ``<root>/<name>/`` in the prepared layout.

    Returns ``<root>/<name>``. Raises :class:`DataError` for an unknown name (listing the valid
    ones), a failed download, or a checksum mismatch.
    """
    if name not in DOWNLOADERS:
        valid = ", ".join(sorted(DOWNLOADERS))
        raise DataError(f"no downloader for dataset {name!r}; valid names: {valid}")
    root = Path(root).expanduser()
    DOWNLOADERS[name](root)
    return root / name
