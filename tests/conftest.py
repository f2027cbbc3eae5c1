from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# One thread per test process, inherited by the subprocesses tests start (CLI runs, pool workers): on the
# 2-core CI machine two threads per tiny op spin against each other (the fast suite took 828 s with 2, 154 s with 1).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import torch  # noqa: E402  (after the thread settings)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_root() -> Path | None:
    """The prepared data root: $TRANSFERLAB_DATA, else ../shared/data next to the repo; None if absent."""
    root = Path(os.environ.get("TRANSFERLAB_DATA", SHARED_DATA))
    return root if (root / "mnist" / "test.npz").is_file() else None


@pytest.fixture
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("prepared data root not found: set TRANSFERLAB_DATA or place ../shared/data next to the repo "
                    "(.ci/run does this)")
    return root


def tiny_config(method: str = "dann", iterations: int = 20, **sections):
    """A seconds-long config on the embedded digits pair (8x8 -> 16x16, small batches)."""
    from transferlab.experiment import load_config

    raw = {
        "seed": 0,
        "data": {"source": {"name": "digits"}, "target": {"name": "digits_m"}, "image_size": 16, "channels": 3,
                 "batch_size": 16, "eval_batch_size": 256},
        "model": {"backbone": "lenet", "bottleneck_dim": 32},
        "method": {"name": method},
        "train": {"iterations": iterations, "eval_every": 0, "checkpoint_every": 0, "log_every": 5,
                  "deterministic": True},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return load_config(raw=raw)


WORKER = Path(__file__).resolve().parent / "dist_worker.py"


def torchrun(tmp_path, method, **env):
    launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert launcher, "torchrun not found next to the Python interpreter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent), **env}
    return subprocess.run([launcher, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path), method],
                          capture_output=True, text=True, timeout=300, env=env)


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (docs/testing.md) mutmut passes each mutant's tests in no particular order and stops
    at the first failure: run them in file order, where each file keeps its slow training-curve tests last, so a
    killed mutant is usually caught by a cheap test first."""
    if "MUTANT_UNDER_TEST" in os.environ:
        items.sort(key=lambda item: (str(item.path), item.location[1] or 0))
