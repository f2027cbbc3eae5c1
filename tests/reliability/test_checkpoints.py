"""Checkpoint faults: a full disk, a damaged or edited checkpoint, a killed write, a diverged BatchNorm.
Each ends in an exact recovery or one clear message, and nothing a run had is lost."""

import json
import shutil

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferlab.cli import main
from transferlab.engine import TrainingDiverged
from transferlab.engine.checkpoint import CheckpointManager, sha256_file, state_digest
from transferlab.errors import CheckpointError, TransferlabError
from transferlab.experiment import build

from conftest import tiny_config


def short_run(tmp_path, iterations=10, checkpoint_every=5, method="dann", stop_at=None, **train):
    out = tmp_path / "run"
    config = tiny_config(method, iterations=iterations,
                         train={"checkpoint_every": checkpoint_every, "iterations": iterations, "keep_checkpoints": 3, **train})
    build(config).trainer(out, progress=False).fit(stop_at=stop_at)
    return config, out


def resume(config, out):
    return build(config).trainer(out, progress=False, resume=True).fit()


def test_a_full_disk_inside_safetensors_is_the_clear_disk_message(tmp_path, monkeypatch):
    """safetensors raises its own SafetensorError (not OSError) when the disk fills: it must still end in the
    disk-full message, with the earlier checkpoint intact and no temporary file left."""
    import transferlab.engine.checkpoint as checkpoint

    config, out = short_run(tmp_path, stop_at=5)

    def full_disk(tensors, path, *args, **kwargs):
        open(path, "wb").write(b"\0" * 10)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(TransferlabError, match=r"\(No space left on device\) at step 10.*no partial file was left"):
        resume(config, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LATEST", "step_00000005"]
    assert CheckpointManager(out / "checkpoints").latest()[1]["step"] == 5


def test_an_edited_state_json_is_skipped_and_named(tmp_path, capsys):
    """One changed number in state.json (its step) used to resume "from step 10" with step-5 weights."""
    config, out = short_run(tmp_path, iterations=15, stop_at=10)
    state_path = out / "checkpoints" / "step_00000010" / "state.json"
    state = json.loads(state_path.read_text())
    state["total_steps"] = 14  # any edit, not only the step
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    result = resume(config, out)
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint step_00000010 (state.json does not match its recorded sha256)" in err
    assert "resuming from step_00000005 (step 5)" in err
    assert result["resumed_from_step"] == 5


def test_a_state_json_whose_step_disagrees_with_its_folder_is_damaged(tmp_path):
    _, out = short_run(tmp_path)
    folder = out / "checkpoints" / "step_00000010"
    state = json.loads((folder / "state.json").read_text())
    state["step"] = 11
    state["state_sha256"] = state_digest(state)  # even with a consistent digest
    (folder / "state.json").write_text(json.dumps(state))
    assert CheckpointManager.check(folder) == (None, "state.json says step 11")
    assert CheckpointManager(out / "checkpoints").latest()[0].name == "step_00000005"


def test_resume_refuses_to_start_over_when_every_checkpoint_is_damaged(tmp_path, capsys):
    config, out = short_run(tmp_path, iterations=15, stop_at=10)
    for folder in (out / "checkpoints").glob("step_*"):
        with open(folder / "model.safetensors", "r+b") as handle:
            handle.truncate(100)
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"every checkpoint is damaged \(step_00000010: model.safetensors does "
                                              r"not match.*Nothing was changed.*--overwrite"):
        resume(config, out)
    assert (out / "metrics.jsonl").read_text() == metrics  # the run's history is kept


def test_a_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    """A tensor of the wrong shape, with the checksum recomputed so it passes verification."""
    config, out = short_run(tmp_path, iterations=15, stop_at=10)
    for folder in (out / "checkpoints").glob("step_*"):
        model = folder / "model.safetensors"
        tensors = load_file(str(model))
        tensors["head.weight"] = torch.zeros(3, 3)
        save_file(tensors, str(model))
        state = json.loads((folder / "state.json").read_text())
        state["files"]["model.safetensors"] = sha256_file(model)
        state["state_sha256"] = state_digest(state)
        (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"step_00000010 does not match this run's model \(size mismatch for "
                                              r"head.weight.*Start over with --overwrite"):
        resume(config, out)


def test_a_killed_checkpoint_write_leaves_nothing_after_the_next_write(tmp_path):
    config, out = short_run(tmp_path, iterations=15, stop_at=10)
    stale = out / "checkpoints" / ".step_00000015.abc123"  # what a SIGKILL during the write leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    extra = out / "checkpoints" / "step_00000001"  # a kill between writing and pruning
    shutil.copytree(out / "checkpoints" / "step_00000005", extra)
    resume(config, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "LATEST", "step_00000005", "step_00000010", "step_00000015"]  # keep_checkpoints: 3


def test_infinite_batchnorm_statistics_count_as_divergence(tmp_path):
    """A finite loss but running_var = inf: the run must stop before writing that model as the last good one."""
    out = tmp_path / "run"
    config = tiny_config("source_only", iterations=20, train={"checkpoint_every": 5, "log_every": 5, "iterations": 20})
    trainer = build(config).trainer(out, progress=False)
    trainer.fit(stop_at=5)
    bn = trainer.method.encoder.bottleneck[1]
    bn.running_var[0] = float("inf")
    bn.momentum = 0.0  # keep it (a real divergence keeps feeding it)
    with pytest.raises(TrainingDiverged, match=r"buffer encoder.bottleneck.1.running_var became NaN/Inf between "
                                               r"steps 6 and 10"):
        trainer.fit()
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_00000005"


def test_the_cli_says_where_it_resumed(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    from transferlab.experiment import resolved_config

    config = tiny_config("source_only", iterations=10, train={"checkpoint_every": 5, "iterations": 10})
    config_path.write_text(json.dumps(resolved_config(config)))
    out = tmp_path / "run"
    build(config).trainer(out, progress=False).fit(stop_at=5)
    (out / "config.json").write_text(json.dumps(resolved_config(config)))
    assert main(["train", str(config_path), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "resuming from step_00000005 (step 5)" in capsys.readouterr().err


def test_sigterm_between_two_log_steps_resumes_to_the_uninterrupted_metrics(tmp_path):
    """SIGTERM at step 7 of windows of 5: the checkpoint carries the open window (steps 6-7) instead of logging it
    early, so the resumed metrics.jsonl (and model) equal an uninterrupted run's."""
    import os
    import signal

    from transferlab.engine.metrics import MetricsLog

    config = tiny_config("dann", iterations=15, train={"checkpoint_every": 0, "log_every": 5, "iterations": 15})
    build(config).trainer(tmp_path / "straight", progress=False).fit()
    trainer = build(config).trainer(tmp_path / "stopped", progress=False)
    original = trainer.method.update

    def update(*batches_then_ctx):
        if batches_then_ctx[-1].step == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # handled after this step: stop at step 7
        return original(*batches_then_ctx)

    trainer.method.update = update
    with pytest.raises(TransferlabError, match="stopped by SIGTERM at step 7"):
        trainer.fit()
    assert [r["step"] for r in MetricsLog.read(tmp_path / "stopped" / "metrics.jsonl")] == [5]
    resume(config, tmp_path / "stopped")
    strip = lambda run: [{k: v for k, v in r.items() if k != "wall_s"} for r in MetricsLog.read(tmp_path / run / "metrics.jsonl")]  # noqa: E731
    assert strip("stopped") == strip("straight")
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("stopped", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_has_one_writer_at_a_time(tmp_path):
    """A second --resume or --overwrite while the first run trains is refused with the holder's PID, and changes
    nothing; once the first run ends, the folder is free again."""
    import os

    from transferlab.experiment import resolved_config

    config = tiny_config("source_only", iterations=6, train={"checkpoint_every": 3, "iterations": 6})
    out = tmp_path / "run"
    first = build(config).trainer(out, progress=False)
    first.prepare_run(resolved_config(config))
    first.fit(stop_at=3)  # fit() releases the lock when it returns: take it again, as a live run holds it
    first.prepare_run(resolved_config(config), resume=True)
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    for flags in ({"resume": True}, {"overwrite": True}):
        second = build(config).trainer(out, progress=False)
        with pytest.raises(CheckpointError, match=rf"in use by another transferlab process \(PID {os.getpid()}\).*"
                                                  rf"nothing was changed"):
            second.prepare_run(resolved_config(config), **flags)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files
    assert first.fit()["step"] == 6
    second = build(config).trainer(out, progress=False)
    assert second.prepare_run(resolved_config(config), overwrite=True) is False  # free again; replaced
    assert (out / "config.json").exists() and not (out / "checkpoints").exists()
    second.release_run()


def test_the_lock_of_a_killed_run_is_released(tmp_path):
    import subprocess
    import sys

    from transferlab.engine.checkpoint import RunLock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from transferlab.engine.checkpoint import RunLock; lock = RunLock.acquire(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(CheckpointError, match=f"PID {holder.pid}"):
        RunLock.acquire(out)
    holder.kill()
    holder.wait()
    RunLock.acquire(out).release()


def test_run_files_get_the_umasks_mode_so_colleagues_can_read_them(tmp_path):
    """Temporary files are created 0600; the files a run leaves must be 0644 under umask 022, like its PNGs."""
    import os
    import stat

    from transferlab.experiment import train

    old = os.umask(0o022)
    try:
        train(tiny_config("source_only", iterations=4, train={"checkpoint_every": 2}), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for path in [run / "config.json", run / "model.safetensors", run / "result.json", run / "metrics.jsonl",
                 *run.glob("checkpoints/*"), *run.glob("checkpoints/step_*/*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    from transferlab.experiment import resolved_config

    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps(resolved_config(tiny_config("source_only", iterations=4))))
    assert main(["train", str(config_path), "--out", str(tmp_path / "typo"), "--resume", "--no-progress"]) == 2
    assert "holds no run to resume (no config.json there)" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_ctrl_c_checkpoints_and_says_how_to_resume_and_no_progress_prints_log_lines(tmp_path, capsys):
    import os
    import signal

    from transferlab.experiment import resolved_config

    config = tiny_config("source_only", iterations=12, train={"checkpoint_every": 0, "log_every": 3, "iterations": 12})
    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps(resolved_config(config)))
    import transferlab.methods.supervised as supervised

    original = supervised.Supervised.update

    def update(self, source, ctx):
        if ctx.step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 5
        return original(self, source, ctx)

    supervised.Supervised.update = update
    try:
        code = main(["train", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"])
    finally:
        supervised.Supervised.update = original
    err = capsys.readouterr().err
    assert code == 2 and "stopped by SIGINT at step 5; a checkpoint was written" in err and "--resume" in err
    assert "step 3/12  cls_loss " in err  # --no-progress: a line per logged step
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text().strip() == "step_00000005"
    assert main(["train", str(config_path), "--out", str(tmp_path / "run"), "--no-progress", "--resume"]) == 0
    assert "resuming from step_00000005 (step 5)" in capsys.readouterr().err
