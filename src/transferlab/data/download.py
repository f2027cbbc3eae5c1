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

This module holds the pinned sources and one recipe per dataset (fetch or find the upstream files,
convert, write each part). The pieces it uses live beside it and are re-exported here, so
``transferlab.data.download`` stays the one module to import: :mod:`.fetch` downloads and checks
files and writes parts atomically (a temporary file in the same folder, then ``os.replace``, so an
interrupted run never leaves a half-written file under its final name); :mod:`.formats` reads the
upstream file formats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from transferlab.errors import DataError

from .fetch import TIMEOUT_S, Resource, fetch, save_npz_atomic, sha256_file
from .formats import (
    MNIST_M_SPLITS,
    convert_mnist_idx,
    convert_mnist_m,
    convert_svhn_mat,
    convert_usps_svmlight,
    read_idx,
    read_svmlight,
)

__all__ = [
    "DOWNLOADERS", "MNIST_RESOURCES", "USPS_RESOURCES", "SVHN_RESOURCES", "download", "download_mnist",
    "download_usps", "download_svhn", "download_mnist_m",
    "TIMEOUT_S", "Resource", "fetch", "save_npz_atomic", "sha256_file",
    "MNIST_M_SPLITS", "read_idx", "read_svmlight", "convert_mnist_idx", "convert_usps_svmlight", "convert_svhn_mat",
    "convert_mnist_m",
]

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
# Recipes: fetch (or find) the upstream files, convert, write each part
# --------------------------------------------------------------------------------------------


def download_mnist(root: Path) -> None:
    """Download the LeCun IDX files and write ``<root>/mnist/{train,test}.npz``."""
    out = Path(root) / "mnist"
    raw = out / "raw"
    res = MNIST_RESOURCES
    paths = {key: fetch(r, raw) for key, r in res.items()}
    for part in ("train", "test"):
        arrays = convert_mnist_idx(paths[f"{part}_images"], paths[f"{part}_labels"])
        save_npz_atomic(out / f"{part}.npz", **arrays)


def download_usps(root: Path) -> None:
    """Download the LIBSVM USPS files and write ``<root>/usps/{train,test}.npz``."""
    out = Path(root) / "usps"
    for part, resource in USPS_RESOURCES.items():
        path = fetch(resource, out / "raw")
        save_npz_atomic(out / f"{part}.npz", **convert_usps_svmlight(path))


def download_svhn(root: Path) -> None:
    """Download the cropped SVHN files and write ``<root>/svhn/{train,test}.npz``."""
    out = Path(root) / "svhn"
    for part, resource in SVHN_RESOURCES.items():
        path = fetch(resource, out / "raw")
        save_npz_atomic(out / f"{part}.npz", **convert_svhn_mat(path))


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
