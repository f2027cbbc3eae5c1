"""Checkpoints and run directories: safetensors for tensors, JSON for everything else, no pickle.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX/`` holding ``model.safetensors``,
``optimizers.safetensors``, ``rng.safetensors`` and ``state.json`` (step, stream positions,
optimizer hyper-parameters, the sha256 of each tensor file, and a sha256 of the state itself). It is
written into a temporary folder and renamed into place, then ``checkpoints/LATEST`` is replaced
atomically; on load, a checkpoint whose files or state do not match their recorded sha256 (a crash or
full disk mid-write, a damaged disk, a hand edit) is skipped in favour of the previous good one, and the
skip is reported. A temporary folder left by a writer that was killed is removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.fetch import sha256_file  # noqa: F401  (one implementation; re-exported for the engine)
from ..errors import CheckpointError

FORMAT_VERSION = 2
"""2: state.json carries ``state_sha256``, the digest of its other contents (version 1 checkpoints load without it)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: str | Path, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (always 0600, folders 0700) the mode the umask gives any new file, so a
    colleague who may read the run folder can read every file in it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder + fsync + rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file's content; a file that is not valid JSON is a :class:`CheckpointError` (``what``: a clause appended
    to its message, e.g. "; it is not a usable run folder")."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}){what}") from None


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _as_os_error(exc: SafetensorError, path: Path) -> OSError:
    """safetensors reports a failed write (a full disk, a read-only folder) as ``SafetensorError`` with the OS
    error inside its message; give it back its errno, so callers handle it like any other failed write."""
    found = re.search(r"(?:os error |code: )(\d+)", str(exc))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code) if found else str(exc), str(path))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file written atomically (tensors copied to CPU and made contiguous). A failed write raises
    ``OSError`` with the system's errno and leaves no file behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        try:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp)
        except SafetensorError as exc:
            raise _as_os_error(exc, path) from None
        _usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


# --- optimizer state <-> (tensors, JSON) ---------------------------------------------------------


def flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{index}/{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    groups = [{k: v.item() if isinstance(v, torch.Tensor) else v for k, v in group.items()}  # tensor lr (graph mode)
              for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "plain": plain}


def unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[field] = value
    for index, values in meta["plain"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# --- checkpoint folders ---------------------------------------------------------------------------


def state_digest(state: dict[str, Any]) -> str:
    """sha256 of a checkpoint's state as canonical JSON, without the digest itself."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class CheckpointManager:
    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def save(self, step: int, files: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temp()
        final = self.folder / f"step_{step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=self.folder))
        try:
            digests = {}
            for filename, tensors in files.items():
                save_tensors(tmp / filename, tensors)
                digests[filename] = sha256_file(tmp / filename)
            full = {**state, "step": step, "files": digests, "format": FORMAT_VERSION}
            atomic_write_json(tmp / "state.json", {**full, "state_sha256": state_digest(full)})
            if final.exists():
                shutil.rmtree(final)
            _usual_mode(tmp, directory=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.folder / "LATEST", final.name + "\n")
        self._prune()
        return final

    def remove_stale_temp(self) -> None:
        """Delete the temporary folders of checkpoint writes that never finished (the writer was killed): one
        writer per run folder, so whatever is there now is left over."""
        for tmp in self.folder.glob(".step_*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _candidates(self) -> list[Path]:
        return sorted(self.folder.glob("step_*"), reverse=True) if self.folder.is_dir() else []

    def _prune(self) -> None:
        for old in self._candidates()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def check(path: Path) -> tuple[dict[str, Any] | None, str]:
        """``(state, "")`` for an intact checkpoint, else ``(None, what is wrong)``."""
        try:
            state = json.loads((path / "state.json").read_text())
            if state.get("format", 1) >= 2 and state.get("state_sha256") != state_digest(state):
                return None, "state.json does not match its recorded sha256"
            if f"step_{int(state['step']):08d}" != path.name:
                return None, f"state.json says step {state['step']}"
            for filename, digest in state["files"].items():
                if sha256_file(path / filename) != digest:
                    return None, f"{filename} does not match its recorded sha256"
            return state, ""
        except FileNotFoundError as exc:
            return None, f"{Path(exc.filename).name} is missing"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, f"unreadable ({type(exc).__name__}: {exc})"

    @classmethod
    def verify(cls, path: Path) -> dict[str, Any] | None:
        """The checkpoint's state if it is intact, else None."""
        return cls.check(path)[0]

    def scan(self) -> tuple[list[tuple[Path, dict[str, Any]]], list[tuple[Path, str]]]:
        """Intact checkpoints and damaged ones (with what is wrong), each newest first."""
        valid, damaged = [], []
        for path in self._candidates():
            state, problem = self.check(path)
            if state is None:
                damaged.append((path, problem))
            else:
                valid.append((path, state))
        return valid, damaged

    def valid(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Intact checkpoints, newest first."""
        yield from self.scan()[0]

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        return next(self.valid(), None)


# --- run directories -------------------------------------------------------------------------------


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.lock``, held while a process trains into
    the folder. The OS drops it when the process ends in any way, SIGKILL included, so a crashed run never
    leaves a stale lock. The file holds the holder's PID, which the refusal names. (``filelock`` takes the same
    lock but records no holder; this is the standard library's ``fcntl``, POSIX only.)"""

    NAME = ".lock"

    def __init__(self, handle, folder: Path, created: bool) -> None:
        self._handle = handle
        self.folder, self.created = folder, created

    @classmethod
    def acquire(cls, out: Path) -> RunLock:
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / cls.NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointError(
                f"{out} is in use by another transferlab process (PID {holder}) that is training into it. Wait for "
                f"it to finish (or stop it), then run again; nothing was changed") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(handle, out, created)

    def release(self, *, discard: bool = False) -> None:
        """Unlock. ``discard``: the run never started (it was refused); remove the folder if taking the lock made it."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
            if discard and self.created and [p.name for p in self.folder.iterdir()] == [self.NAME]:
                shutil.rmtree(self.folder, ignore_errors=True)


def _clear_run_dir(out: Path) -> None:
    """Delete a run folder's contents, but not its lock (held by this process while it replaces the run)."""
    for child in out.iterdir():
        if child.name == RunLock.NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_run_dir(out: Path, config: dict[str, Any], *, resume: bool, overwrite: bool,
                    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
    """Make ``out`` ready for a run; returns True when an earlier run there should be resumed.

    A folder that already holds a run is refused unless ``resume`` (same config required) or
    ``overwrite`` (the old run is deleted) is given, so a typo never clobbers finished work.
    ``normalize`` resolves the saved config as the current version would (an option added since the
    run started takes its default), so such a run still resumes.
    """
    saved = out / "config.json"
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a folder; choose a folder for the run")
    if resume and not saved.exists():
        raise CheckpointError(f"--resume: {out} holds no run to resume (no config.json there). Check the path, or "
                              f"start the run without --resume")
    if saved.exists():
        if overwrite:
            _clear_run_dir(out)
        elif resume:
            previous = json.loads(saved.read_text())
            if normalize is not None:
                previous = normalize(previous)
            if previous != config:
                changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
                raise CheckpointError(
                    f"{out} holds a run with a different config (sections differ: {', '.join(changed)}); "
                    f"resume with the same config, or use --overwrite to start over"
                )
            return True
        else:
            raise CheckpointError(
                f"{out} already holds a run. Use --resume to continue it, --overwrite to replace it, or choose "
                f"another --out"
            )
    elif out.exists() and any(p.name != RunLock.NAME for p in out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, config)
    return False
