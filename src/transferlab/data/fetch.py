"""Getting upstream files onto disk safely: downloads checked against a pinned sha256, and atomic
writes of prepared parts.

:func:`fetch` downloads a :class:`Resource` (``https://``, ``http://`` or ``file://``) into a folder,
trying its mirrors in order, and keeps the file only when its sha256 matches the pinned one; a file
already there with the right sha256 is used as is. :func:`save_npz_atomic` writes a prepared
``<part>.npz`` that always loads without pickles. Which files a dataset needs is in
:mod:`transferlab.data.download`.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
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
