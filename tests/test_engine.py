"""Engine: checkpoints round-trip, a resumed run equals an uninterrupted one, run folders are protected."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transferlab.engine import CheckpointManager
from transferlab.engine.checkpoint import state_digest
from transferlab.engine.metrics import MetricsLog
from transferlab.errors import CheckpointError
from transferlab.experiment import build, load_run, resolved_config, train

from conftest import tiny_config


def params(path):
    return load_file(str(path))


def test_checkpoint_manager_round_trip_and_skips_corrupt(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    manager.save(10, {"model.safetensors": a}, {"note": "first"})
    b = {"w": torch.ones(2, 3), "b": torch.tensor([3, 4])}
    newest = manager.save(20, {"model.safetensors": b}, {"note": "second"})
    path, state = manager.latest()
    assert path == newest and state["step"] == 20 and state["note"] == "second"
    assert torch.equal(load_file(str(path / "model.safetensors"))["w"], b["w"])
    # Truncate the newest tensor file as a crash mid-write would: the previous checkpoint is used.
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    path, state = manager.latest()
    assert state["step"] == 10
    assert torch.equal(load_file(str(path / "model.safetensors"))["w"], a["w"])
    assert not list(tmp_path.glob(".step_*")), "no temporary folders may be left behind"


def test_checkpoint_keeps_only_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        manager.save(step, {"m.safetensors": {"x": torch.zeros(1)}}, {})
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003"]


@pytest.mark.parametrize("method", ["dann", "mcd", "adda", "simclr", "denoising_autoencoder"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, method):
    """Pretraining methods included: SimCLR's random views and the masking noise come from the
    checkpointed RNG, so a resumed run draws the same ones."""
    total = 12
    config = tiny_config(method, iterations=total, train={"checkpoint_every": 5, "iterations": total})
    train(config, tmp_path / "full", progress=False)
    # Interrupted: the same config stopped at step 7 (2 steps after its checkpoint at 5, which are redone) ...
    short = tiny_config(method, iterations=total, train={"checkpoint_every": 5, "iterations": total})
    experiment = build(short)
    from transferlab.engine import prepare_run_dir

    prepare_run_dir(tmp_path / "resumed", resolved_config(short), resume=False, overwrite=False)
    assert experiment.trainer(tmp_path / "resumed", progress=False).fit(stop_at=7)["stopped_early"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    # ... then resumed with the original command.
    train(short, tmp_path / "resumed", resume=True, progress=False)
    full, resumed = params(tmp_path / "full" / "model.safetensors"), params(tmp_path / "resumed" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    strip = lambda records: [{k: v for k, v in r.items() if k != "wall_s"} for r in records]  # noqa: E731
    assert strip(MetricsLog.read(tmp_path / "full" / "metrics.jsonl")) == strip(
        MetricsLog.read(tmp_path / "resumed" / "metrics.jsonl"))


def test_a_resumed_runs_train_seconds_cover_every_segment(tmp_path):
    from transferlab.engine import prepare_run_dir

    config = tiny_config("dann", iterations=12, train={"checkpoint_every": 5, "iterations": 12})

    def interrupted(folder):  # stopped at step 7: its newest checkpoint is step 5's
        prepare_run_dir(folder, resolved_config(config), resume=False, overwrite=False)
        assert build(config).trainer(folder, progress=False).fit(stop_at=7)["stopped_early"]
        return folder / "checkpoints" / "step_00000005" / "state.json"

    before = json.loads(interrupted(tmp_path / "run").read_text())["train_seconds"]  # up to step 5
    assert before > 0
    result = train(config, tmp_path / "run", resume=True, progress=False)
    assert result["resumed_from_step"] == 5 and result["train_seconds_from_step"] == 0
    # the first segment's seconds plus this one's (steps_per_s is this segment's: 7 steps)
    assert result["train_seconds"] == pytest.approx(before + 7 / result["steps_per_s"], rel=1e-9)
    # A checkpoint written before this field existed: the count says where it starts.
    state_file = interrupted(tmp_path / "old")
    state = json.loads(state_file.read_text())
    del state["train_seconds"], state["state_sha256"]  # and before state.json carried its own digest (format 1)
    state["format"] = 1
    state_file.write_text(json.dumps(state))
    result = train(config, tmp_path / "old", resume=True, progress=False)
    assert result["train_seconds_from_step"] == 5 and result["resumed_from_step"] == 5
    assert result["train_seconds"] == pytest.approx(7 / result["steps_per_s"], rel=1e-9)
    fresh = train(config, tmp_path / "fresh", progress=False)
    assert fresh["resumed_from_step"] is None and fresh["train_seconds_from_step"] == 0


def test_run_folder_is_protected_and_eval_reproduces_result(tmp_path):
    config = tiny_config("dann", iterations=6)
    result = train(config, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="already holds a run. Use --resume"):
        train(config, tmp_path / "run", progress=False)
    changed = tiny_config("dann", iterations=6, optim={"lr": 0.5})
    with pytest.raises(CheckpointError, match="different config"):
        train(changed, tmp_path / "run", resume=True, progress=False)
    experiment = load_run(tmp_path / "run")
    again = experiment.trainer(None, progress=False).evaluate()
    assert again["target_test/acc"] == pytest.approx(result["target_test/acc"])
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["target_test/acc"] == pytest.approx(result["target_test/acc"])
    train(config, tmp_path / "run", overwrite=True, progress=False)


def test_metrics_log_grl_lambda_and_lr(tmp_path):
    train(tiny_config("dann", iterations=10), tmp_path / "run", progress=False)
    records = [r for r in MetricsLog.read(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in records] == [5, 10]
    from transferlab.schedules import GaninSchedule, InverseDecay

    # Values logged are those of the last step in each window (step index 4 and 9 of 10).
    assert records[0]["grl_lambda"] == pytest.approx(GaninSchedule()(4 / 10))
    assert records[1]["lr"] == pytest.approx(0.01 * InverseDecay()(9 / 10))
    assert {"cls_loss", "transfer_loss", "domain_acc"} <= set(records[0])


def test_a_run_saved_before_an_option_existed_still_resumes(tmp_path):
    """config.json of a run started by an older version lacks options added since (e.g. train.cuda_graph);
    resolved with their defaults it is the same config, so --resume continues it."""
    config = tiny_config("dann", iterations=8, train={"checkpoint_every": 4})
    from transferlab.engine import prepare_run_dir

    prepare_run_dir(tmp_path / "run", resolved_config(config), resume=False, overwrite=False)
    assert build(config).trainer(tmp_path / "run", progress=False).fit(stop_at=4)["stopped_early"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["train"]["cuda_graph"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert train(config, tmp_path / "run", resume=True, progress=False)["step"] == 8
    changed = tiny_config("dann", iterations=8, train={"checkpoint_every": 4, "cudnn_benchmark": True})
    with pytest.raises(CheckpointError, match="sections differ: train"):
        train(changed, tmp_path / "run", resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    from transferlab.engine import TrainingDiverged

    config = tiny_config("source_only", iterations=10, optim={"lr": 1e30})
    with pytest.raises(TrainingDiverged, match="NaN/Inf"):
        train(config, tmp_path / "run", progress=False)


def test_fused_optimizer_and_resume_across_implementations(tmp_path):
    """On CUDA the trainer asks for PyTorch's fused optimizer kernels; a checkpoint written that way (the
    flag is saved in its param groups) resumes on a machine that steps another way, here the CPU."""
    from transferlab.config import OptimConfig
    from transferlab.engine.trainer import build_optimizer
    from transferlab.methods.base import OptimizerRequest

    w = torch.nn.Parameter(torch.ones(3))
    fused = build_optimizer(OptimizerRequest(groups=[([w], 1.0)]), OptimConfig(lr=0.1), lambda p: 1.0, fused=True)
    plain = build_optimizer(OptimizerRequest(groups=[([w], 1.0)]), OptimConfig(lr=0.1), lambda p: 1.0)
    try:  # does this torch have a fused SGD for these (CPU) parameters? If not, the trainer falls back
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, fused=True)
        available = True
    except RuntimeError:
        available = False
    assert not plain.param_groups[0].get("fused")
    assert bool(fused.param_groups[0].get("fused")) == available

    config = tiny_config("dann", iterations=10, train={"checkpoint_every": 5, "deterministic": False})
    run = tmp_path / "run"
    from transferlab.engine import prepare_run_dir

    prepare_run_dir(run, resolved_config(config), resume=False, overwrite=False)
    assert build(config).trainer(run, progress=False).fit(stop_at=5)["stopped_early"]
    state_path = next((run / "checkpoints").glob("step_*")) / "state.json"
    state = json.loads(state_path.read_text())
    for group in state["optimizers"]["main"]["param_groups"]:
        group["fused"] = True  # as a CUDA run writes it
    state["state_sha256"] = state_digest(state)
    state_path.write_text(json.dumps(state))
    trainer = build(config).trainer(run, progress=False, resume=True)
    result = trainer.fit()
    assert result["step"] == 10 and not trainer.optimizers["main"].param_groups[0].get("fused")


def test_fused_resume_restores_the_parameters_memory_layout(tmp_path, monkeypatch):
    """CUDA runs use fused optimizers and channels_last conv weights; a checkpoint stores the momentum buffers
    contiguous. The fused kernels treat parameter, gradient and buffer as flat memory, so the loaded buffers
    must get the parameters' layout back, or the resumed run drifts from the uninterrupted one."""
    import transferlab.engine.trainer as engine
    from transferlab.engine import prepare_run_dir

    build_fused = engine.build_optimizer
    monkeypatch.setattr(engine, "build_optimizer", lambda *a, **k: build_fused(*a, **{**k, "fused": True}))
    config = tiny_config("dann", iterations=8, train={"checkpoint_every": 5})
    full = build(config).trainer(None, progress=False)
    full.fit()
    prepare_run_dir(tmp_path / "run", resolved_config(config), resume=False, overwrite=False)
    assert build(config).trainer(tmp_path / "run", progress=False).fit(stop_at=6)["stopped_early"]
    resumed = build(config).trainer(tmp_path / "run", progress=False, resume=True)
    resumed.fit()
    conv = resumed.method.encoder.backbone.conv[0].weight
    assert resumed.optimizers["main"].param_groups[0]["fused"]
    assert not conv.is_contiguous() and resumed.optimizers["main"].state[conv]["momentum_buffer"].stride() == conv.stride()
    for (name, a), b in zip(full.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(a, b), name


def test_image_transform_makes_its_constants_once():
    """mean/std/luma are device tensors made on the first batch and reused: a fresh torch.tensor on every
    batch would be a blocking host-to-device copy on CUDA."""
    from transferlab.data.transforms import ImageTransform

    transform = ImageTransform(channels=1, size=16, mean=(0.5,), std=(0.25,))
    rgb = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    first = transform(rgb)
    cached = dict(transform._constants)
    second = transform(rgb)
    assert torch.equal(first, second)
    assert len(cached) == 3 and all(transform._constants[k] is v for k, v in cached.items())
    luma = (rgb.float().div(255).permute(0, 3, 1, 2) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(first, (luma - 0.5) / 0.25, atol=1e-6)
