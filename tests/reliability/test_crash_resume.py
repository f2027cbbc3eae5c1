"""A run killed at an arbitrary step and resumed with the same command ends exactly like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab.engine.metrics import MetricsLog

CONFIG = """\
data: {source: {name: digits}, target: {name: digits_m}, image_size: 16, channels: 3, batch_size: 16}
model: {backbone: lenet, bottleneck_dim: 32}
method: {name: %s}
train: {iterations: %d, eval_every: 25, checkpoint_every: 10, log_every: 5, deterministic: true}
"""


# Bit-exact equality needs the same thread count in every process (reduction order depends on it).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args):
    return [sys.executable, "-m", "transferlab.cli", *args]


def run(*args):
    return subprocess.run(cli(*args), capture_output=True, text=True, env=ENV)


def write_config(tmp_path: Path, method: str, iterations: int) -> Path:
    path = tmp_path / f"{method}.yaml"
    path.write_text(CONFIG % (method, iterations))
    return path


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    strip = lambda records: [{k: v for k, v in r.items() if k != "wall_s"} for r in records]  # noqa: E731
    assert strip(MetricsLog.read(a / "metrics.jsonl")) == strip(MetricsLog.read(b / "metrics.jsonl"))


def run_until_checkpoint_then(sig: int, config: Path, out: Path, min_step: int = 10) -> subprocess.Popen:
    """Start training, wait until a checkpoint exists, then send ``sig``."""
    proc = subprocess.Popen(cli("train", str(config), "--out", str(out), "--no-progress"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        latest = out / "checkpoints" / "LATEST"
        if latest.exists() and int(latest.read_text().strip().split("_")[1]) >= min_step:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted; raise iterations"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "mcd"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, method):
    config = write_config(tmp_path, method, iterations=200)
    assert run("train", str(config), "--out", str(tmp_path / "full"), "--no-progress").returncode == 0
    proc = run_until_checkpoint_then(signal.SIGKILL, config, tmp_path / "killed")
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    # Same command + --resume.
    done = run("train", str(config), "--out", str(tmp_path / "killed"), "--no-progress", "--resume")
    assert done.returncode == 0, done.stderr
    assert_same_run(tmp_path / "full", tmp_path / "killed")


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_previous_and_still_matches(tmp_path):
    config = write_config(tmp_path, "dann", iterations=200)
    assert run("train", str(config), "--out", str(tmp_path / "full"), "--no-progress").returncode == 0
    run_until_checkpoint_then(signal.SIGKILL, config, tmp_path / "killed", min_step=20)
    checkpoints = sorted((tmp_path / "killed" / "checkpoints").glob("step_*"))
    assert len(checkpoints) >= 2
    newest = checkpoints[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # as if the disk filled up mid-write
    done = run("train", str(config), "--out", str(tmp_path / "killed"), "--no-progress", "--resume")
    assert done.returncode == 0, done.stderr
    assert_same_run(tmp_path / "full", tmp_path / "killed")


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    config = write_config(tmp_path, "dann", iterations=200)
    proc = run_until_checkpoint_then(signal.SIGTERM, config, tmp_path / "run")
    stderr = proc.stderr.read()
    assert proc.returncode == 2, stderr
    assert "stopped by SIGTERM at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    step = int(stderr.split("at step ")[1].split(";")[0])
    latest = (tmp_path / "run" / "checkpoints" / "LATEST").read_text().strip()
    assert latest == f"step_{step:08d}", "the checkpoint must be taken at the step where the signal was handled"
    done = run("train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--resume")
    assert done.returncode == 0, done.stderr
