"""Every bad input ends in one clear error, and nothing already written is overwritten or left half-written."""

import errno
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from transferlab.cli import main
from transferlab.experiment import load_config
from transferlab.errors import CheckpointError, DataError, TransferlabError
from transferlab.experiment import build, load_run, train

from conftest import tiny_config


def npz(root, name, part, x, y):
    (root / name).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / name / f"{part}.npz", x=x, y=y)


def digits_like(n, size=28, classes=10):
    return np.zeros((n, size, size), np.uint8), np.arange(n) % classes


def test_label_spaces_that_differ_are_refused(tmp_path):
    npz(tmp_path, "mnist", "train", *digits_like(20))
    npz(tmp_path, "pneumoniamnist", "train", *digits_like(20, classes=2))
    npz(tmp_path, "pneumoniamnist", "test", *digits_like(20, classes=2))
    config = load_config(raw={"data": {"source": {"name": "mnist"}, "target": {"name": "pneumoniamnist"},
                                       "batch_size": 4}})
    with pytest.raises(DataError, match="label spaces differ: mnist/train has 10 classes, pneumoniamnist/train has 2 classes"):
        build(config, tmp_path)


def test_empty_target_set_is_refused(tmp_path):
    npz(tmp_path, "mnist", "train", *digits_like(20))
    npz(tmp_path, "usps", "train", np.zeros((0, 16, 16), np.float32), np.zeros(0, np.int64))
    npz(tmp_path, "usps", "test", np.zeros((4, 16, 16), np.float32), np.arange(4))
    config = load_config(raw={"data": {"source": {"name": "mnist"}, "target": {"name": "usps"}, "image_size": 28,
                                       "batch_size": 4}})
    with pytest.raises(DataError, match="target data is empty"):
        build(config, tmp_path)


def test_image_size_that_the_backbone_cannot_take(tmp_path):
    with pytest.raises(TransferlabError, match="backbone 'lenet' cannot be built for 3x8x8 input"):
        build(tiny_config("dann", data={"image_size": 8}))
    with pytest.raises(DataError, match="the images differ in size"):
        build(tiny_config("dann", data={"image_size": None}))


def test_pretrained_weights_for_another_shape_are_refused(tmp_path):
    from transferlab.models import LeNet

    save_file(LeNet(1, 28).state_dict(), str(tmp_path / "grey.safetensors"))
    with pytest.raises(TransferlabError, match="does not fit backbone 'lenet'"):
        build(tiny_config("dann", model={"pretrained": str(tmp_path / "grey.safetensors")}))


def test_a_head_with_another_class_count_is_refused(tmp_path):
    train(tiny_config("source_only", iterations=2), tmp_path / "run", progress=False)
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    weights["head.weight"] = torch.zeros(5, weights["head.weight"].shape[1])
    weights["head.bias"] = torch.zeros(5)
    save_file(weights, str(tmp_path / "run" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the run's model: .*head.weight"):
        load_run(tmp_path / "run")


def test_out_of_memory_is_a_clear_message(tmp_path, monkeypatch):
    experiment = build(tiny_config("dann", iterations=4))

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(experiment.method, "update", boom)
    with pytest.raises(TransferlabError, match="out of memory .* Lower data.batch_size, use train.precision: bf16"):
        experiment.trainer(tmp_path / "run", progress=False).fit()


def test_disk_full_while_checkpointing_leaves_no_partial_files(tmp_path, monkeypatch):
    import transferlab.engine.checkpoint as checkpoint

    out = tmp_path / "run"
    config = tiny_config("dann", iterations=10, train={"checkpoint_every": 5, "iterations": 10})
    experiment = build(config)
    experiment.trainer(out, progress=False).fit(stop_at=5)
    good = sorted((out / "checkpoints").glob("step_*"))
    assert [p.name for p in good] == ["step_00000005"]
    real_save = checkpoint.save_file

    def full_disk(tensors, path, *args, **kwargs):
        real_save(tensors, path)
        with open(path, "r+b") as handle:  # leave a truncated file, as a full disk would
            handle.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    trainer = build(config).trainer(out, progress=False, resume=True)
    with pytest.raises(TransferlabError, match="No space left on device.*no partial file was left"):
        trainer.fit()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LATEST", "step_00000005"]
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_00000005"
    assert not (out / "model.safetensors").exists()
    assert checkpoint.CheckpointManager(out / "checkpoints").latest()[1]["step"] == 5


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    from transferlab.engine import TrainingDiverged

    out = tmp_path / "run"
    config = tiny_config("source_only", iterations=20, train={"checkpoint_every": 5, "log_every": 10, "iterations": 20})
    experiment = build(config)
    trainer = experiment.trainer(out, progress=False)
    trainer.fit(stop_at=5)
    for group in trainer.optimizers["main"].param_groups:  # make the next steps diverge
        group["initial_lr"] = 1e30
    with pytest.raises(TrainingDiverged, match="NaN/Inf between steps 6 and 10"):
        trainer.fit()
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_00000005"
    weights = load_file(str(out / "checkpoints" / "step_00000005" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_a_run_folder_holding_another_run_is_never_overwritten(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {source: {name: digits}, target: {name: digits_m}, image_size: 16, channels: 3, "
                      "batch_size: 16}\nmodel: {bottleneck_dim: 32}\ntrain: {iterations: 2}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--set", "seed=1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["train", str(config), "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 0


# --- the remaining bad inputs of the reliability checklist, end to end through the CLI ------------


def _cli_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


DIGITS_RUN = ("data: {source: {name: mnist}, target: {name: usps}, image_size: 28, batch_size: 4}\n"
              "model: {bottleneck_dim: 8}\ntrain: {iterations: 2}\n")


def test_cli_missing_and_corrupt_dataset_files(tmp_path, capsys):
    config = _cli_config(tmp_path, DIGITS_RUN)
    root = tmp_path / "root"
    assert main(["train", str(config), "--data-root", str(root), "--out", str(tmp_path / "r1"), "--no-progress"]) == 2
    assert "mnist/train.npz does not exist" in capsys.readouterr().err
    npz(root, "mnist", "train", *digits_like(8))
    (root / "usps").mkdir()
    (root / "usps" / "train.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 20)  # a truncated download
    assert main(["train", str(config), "--data-root", str(root), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "usps/train.npz is corrupt or truncated" in err and "Traceback" not in err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_download_with_a_wrong_sha256_keeps_nothing(tmp_path):
    from transferlab.data.download import Resource, fetch

    served = tmp_path / "served.bin"
    served.write_bytes(b"tampered")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="sha256"):
        fetch(Resource(served.as_uri(), "0" * 64, "file.bin"), dest, progress=False)
    assert not dest.exists() or not any(dest.iterdir())


@pytest.mark.parametrize("override, message", [
    ("train.iteratons=5", "Did you mean 'iterations'"),
    ("optim.lr=-0.1", "optim.lr: Input should be greater than 0"),
    ("data.batch_size=many", "data.batch_size: Input should be a valid integer"),
])
def test_cli_misspelled_keys_wrong_types_and_ranges(tmp_path, capsys, override, message):
    config = _cli_config(tmp_path, DIGITS_RUN)
    assert main(["train", str(config), "--set", override, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_empty_test_split_is_named_as_the_test_split(tmp_path):
    npz(tmp_path, "mnist", "train", *digits_like(20))
    npz(tmp_path, "usps", "train", *digits_like(20, size=16))
    npz(tmp_path, "usps", "test", np.zeros((0, 16, 16), np.uint8), np.zeros(0, np.int64))
    config = load_config(raw={"data": {"source": {"name": "mnist"}, "target": {"name": "usps"}, "image_size": 28},
                              "method": {"name": "dann"}})
    with pytest.raises(DataError, match=r"test data is empty \(usps/test\)"):
        build(config, tmp_path)


@pytest.mark.parametrize("x, y, message", [
    (np.array([["a"] * 28] * 28 * 4, dtype="<U1").reshape(4, 28, 28), np.arange(4), "x has dtype <U1; expected uint8"),
    (np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.float32), "y has dtype float32; expected integer class"),
    (np.zeros((4, 28, 28), np.uint8), np.arange(4).reshape(4, 1), r"y has shape \(4, 1\); expected one integer label"),
    (np.zeros((4, 28, 28, 5), np.uint8), np.arange(4), r"x has shape \(4, 28, 28, 5\); images are grey"),
    (np.zeros((4, 28), np.uint8), np.arange(4), r"x has shape \(4, 28\); images are grey"),
])
def test_data_files_with_the_wrong_dtype_or_shape_are_refused_by_name(tmp_path, x, y, message):
    from transferlab.data import load

    npz(tmp_path, "mnist", "train", x, y)
    with pytest.raises(DataError, match=f"mnist/train: {message}"):
        load("mnist", "train", tmp_path)
