"""Two CPU processes (gloo) launched with torchrun train the same model: identical parameters at the end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).resolve().parent / "dist_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "mcd"])
def test_two_process_gloo_run_ends_with_identical_parameters(tmp_path, method):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found next to the Python interpreter"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path), method],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0/2 moved=True" in done.stdout and "rank 1/2 moved=True" in done.stdout
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Rank 0 alone wrote the run's files.
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # Both ranks report the same (all-reduced) accuracy.
    accs = {line.split("acc=")[1] for line in done.stdout.splitlines() if "acc=" in line}
    assert len(accs) == 1
