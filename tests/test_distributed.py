"""Two CPU processes (gloo) launched with torchrun train the same model: identical parameters at the end."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import torchrun

@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "mcd"])
def test_two_process_gloo_run_ends_with_identical_parameters(tmp_path, method):
    done = torchrun(tmp_path, method)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0/2 moved=True saves=3" in done.stdout and "rank 1/2 moved=True saves=0" in done.stdout
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Rank 0 alone wrote the run's files (checkpoints at steps 2, 4, 6; rank 1 wrote none).
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # Both ranks report the same (all-reduced) accuracy.
    accs = {line.split("acc=")[1] for line in done.stdout.splitlines() if "acc=" in line}
    assert len(accs) == 1



@pytest.mark.slow
def test_the_documented_torchrun_cli_command(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    config = tmp_path / "t.yaml"
    config.write_text("data: {source: {name: digits}, target: {name: digits_m}, image_size: 16, channels: 3, "
                      "batch_size: 16}\nmodel: {bottleneck_dim: 32}\nmethod: {name: mcd}\n"
                      "train: {iterations: 8, eval_every: 4, checkpoint_every: 4, log_every: 4}\n")
    launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    done = subprocess.run([launcher, "--standalone", "--nproc_per_node", "2", "-m", "transferlab.cli", "train",
                           str(config), "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run saved in") == 1
    assert '"world_size": 2' in done.stdout
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.json", "metrics.jsonl", "model.safetensors",
                                                             "result.json", "checkpoints"}


@pytest.mark.slow
def test_contrastive_loss_over_the_gathered_batch_matches_one_process(tmp_path):
    """Two processes with half the batch each, negatives gathered across them, gradients averaged by
    the engine: the same update as one process computing NT-Xent on the whole batch."""
    import os
    import shutil
    import subprocess
    import sys

    from gather_worker import global_batch, initial_encoder
    from transferlab.losses import nt_xent

    worker = Path(__file__).resolve().parent / "gather_worker.py"
    launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    done = subprocess.run([launcher, "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parent)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    encoder = initial_encoder()
    view1, view2 = global_batch()
    nt_xent(encoder(view1), encoder(view2), 0.5).backward()
    expected = encoder.weight.detach() - 0.1 * encoder.weight.grad
    gathered = load_file(str(tmp_path / "gathered.safetensors"))["weight"]
    assert not torch.allclose(gathered, encoder.weight.detach())  # the step moved the weights
    torch.testing.assert_close(gathered, expected, rtol=1e-5, atol=1e-6)
