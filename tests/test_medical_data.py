"""Modality preprocessing for images (issue #16): window/level and per-image percentile intensity mapping,
``data.mean/std: train`` computed from the source training set only and recorded in the run, and training-only
image augmentation (``data.augment``) drawn from the run's seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import shared_data_root, tiny_config
from transferlab.data.augment import view_pipeline
from transferlab.data.transforms import ImageTransform, intensity_percentile
from transferlab.errors import ConfigError
from transferlab.experiment import (build, evaluate_on, load_config, load_for_eval, make_modality,
                                    train, train_statistics)

SIDE = 16


def write_toy_images(root: Path, name: str = "toymed", rgb: bool = False) -> Path:
    """A 2-class image set whose splits have very different intensities: train pixels in 0..100 (the class decides
    which half is brighter), test pixels in 150..255, so statistics of the wrong split are easy to tell apart."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, n, (low, high) in (("train", 48, (0, 100)), ("test", 32, (150, 255))):
        shape = (n, SIDE, SIDE, 3) if rgb else (n, SIDE, SIDE)
        x = rng.integers(low, high + 1, size=shape).astype(np.uint8)
        y = np.arange(n, dtype=np.int64) % 2
        x[y == 1, :, : SIDE // 2] = high  # class 1: a bright left half
        np.savez_compressed(folder / f"{part}.npz", x=x, y=y)
    (folder / "dataset.json").write_text(json.dumps(
        {"kind": "image", "format": "npz", "num_classes": 2, "parts": ["train", "test"]}))
    return folder


def toy_config(root: Path, iterations: int = 4, **data) -> dict:
    return {
        "seed": 0,
        "data": {"root": str(root), "source": {"name": "toymed", "part": "train"},
                 "test": {"name": "toymed", "part": "test"}, "channels": 1, "batch_size": 8,
                 "eval_batch_size": 64, **data},
        "model": {"backbone": "lenet", "bottleneck_dim": 16},
        "method": {"name": "source_only"},
        "train": {"iterations": iterations, "eval_every": 0, "checkpoint_every": 0, "log_every": 1,
                  "deterministic": True},
    }


def train_losses(run: Path) -> list[float]:
    return [r["cls_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


# --- intensity mapping -----------------------------------------------------------------------------------------


def test_window_maps_level_and_width_exactly_in_stored_units():
    stored = torch.tensor([[[0, 74, 75, 100, 125, 126, 255]]], dtype=torch.uint8)
    out = ImageTransform(1, None, (0.0,), (1.0,), window=(100.0, 50.0))(stored)  # 75 -> 0, 125 -> 1
    assert torch.equal(out.flatten(), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]))
    # CT-like signed values: level 40, width 400 (a soft-tissue window) -> -160 .. 240; then (x - 0.5) / 0.5
    hounsfield = torch.tensor([[[-1000, -160, 40, 240, 3000]]], dtype=torch.int16)
    out = ImageTransform(1, None, (0.5,), (0.5,), window=(40.0, 400.0))(hounsfield)
    assert torch.equal(out.flatten(), torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))


def test_intensity_is_mapped_before_the_resize():
    # [0, 255] with the window 100..155 -> [0, 1], then bilinear to 4 px: 0, .25, .75, 1. Resizing first would give
    # 0, 63.75, 191.25, 255 -> 0, 0, 1, 1.
    stored = torch.tensor([[[0, 255]]], dtype=torch.uint8).expand(1, 2, 2).contiguous()
    out = ImageTransform(1, 4, (0.0,), (1.0,), window=(127.5, 55.0))(stored)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_percentile_mapping_equals_numpy_per_image(monkeypatch):
    from transferlab.data import transforms

    monkeypatch.setattr(transforms, "_SORT_ELEMENTS", 2 * 9 * 7)  # sorted two images at a time
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 9, 7)).astype(np.uint8)
    images[1] //= 4  # a darker image gets its own range
    low, high = 2.5, 97.0
    out = ImageTransform(1, None, (0.0,), (1.0,), percentile=(low, high))(torch.from_numpy(images))
    for i, image in enumerate(images.astype(np.float64)):
        lo, hi = np.percentile(image, [low, high])
        np.testing.assert_allclose(out[i, 0].numpy(), np.clip((image - lo) / (hi - lo), 0, 1), atol=1e-6)
    # RGB: one mapping per image over all its channels (the colours keep their relation)
    rgb = rng.integers(0, 256, size=(2, 5, 5, 3)).astype(np.uint8)
    out = ImageTransform(3, None, (0.0,) * 3, (1.0,) * 3, percentile=(low, high))(torch.from_numpy(rgb))
    for i, image in enumerate(rgb.astype(np.float64)):
        lo, hi = np.percentile(image, [low, high])
        want = np.clip((image - lo) / (hi - lo), 0, 1).transpose(2, 0, 1)
        np.testing.assert_allclose(out[i].numpy(), want, atol=1e-6)


def test_percentile_mapping_is_per_image_so_a_scaled_copy_maps_the_same():
    image = torch.rand(1, 12, 12) * 50 + 10
    batch = torch.cat([image, image * 7.0 + 300.0, torch.full((1, 12, 12), 5.0)])  # a rescaled copy; a constant
    out = intensity_percentile(batch, 1.0, 99.0)
    assert torch.allclose(out[0], out[1], atol=1e-5)
    assert out[0].min() == 0 and out[0].max() == 1


def test_constant_images_give_finite_output():
    constant = torch.full((2, 8, 8), 7, dtype=torch.uint8)
    out = ImageTransform(3, 16, (0.5,) * 3, (0.25,) * 3, percentile=(1.0, 99.0))(constant)
    assert torch.isfinite(out).all() and torch.equal(out, torch.full_like(out, -2.0))  # maps to 0
    spike = torch.zeros(1, 10, 10)
    spike[0, 0, 0] = 1.0  # the 1st and 99th percentiles are both 0: the outlier goes to 1, the rest to 0
    out = intensity_percentile(spike, 1.0, 99.0)
    assert torch.isfinite(out).all() and out.sum() == 1 and out[0, 0, 0] == 1


@pytest.mark.parametrize("intensity", [{}, {"window": [40, 400], "percentile": [1, 99]}, {"window": [40, 0]},
                                       {"percentile": [99, 1]}])
def test_bad_intensity_settings_are_config_errors(tmp_path, intensity):
    with pytest.raises(ConfigError, match="data.intensity"):
        load_config(raw=toy_config(tmp_path, intensity=intensity))


def test_intensity_reaches_the_transform_from_the_config(tmp_path):
    write_toy_images(tmp_path)
    experiment = build(load_config(raw=toy_config(tmp_path, intensity={"window": [50, 100]}, mean=[0.0],
                                                  std=[1.0])))
    x = experiment.test.x[:4]
    want = np.clip(x.numpy().astype(np.float64) / 100.0, 0, 1)
    np.testing.assert_allclose(experiment.transform(x)[:, 0].numpy(), want, atol=1e-6)
    percentile = build(load_config(raw=toy_config(tmp_path, intensity={"percentile": [0, 100]}, mean=[0.0],
                                                  std=[1.0])))
    out = percentile.transform(x)
    assert torch.equal(out.amin(dim=(1, 2, 3)), torch.zeros(4)) and torch.equal(out.amax(dim=(1, 2, 3)), torch.ones(4))


# --- statistics of the training set ----------------------------------------------------------------------------


def test_train_statistics_stream_in_chunks_and_are_per_channel(tmp_path):
    from transferlab.data import load

    write_toy_images(tmp_path, rgb=True)
    train_set = load("toymed", "train", tmp_path)
    transform = ImageTransform(3, None, (0.0,) * 3, (1.0,) * 3, window=(60.0, 80.0))
    mean, std = train_statistics(train_set, transform, chunk_elements=3 * SIDE * SIDE * 5)  # 10 chunks of 5 images
    pixels = np.clip((train_set.x.numpy().astype(np.float64) - 20.0) / 80.0, 0, 1)
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 1, 2)), rtol=1e-5)
    assert len(set(mean)) == 3  # three different channels


def test_mean_train_uses_the_training_set_only_and_is_recorded_in_the_run(tmp_path):
    write_toy_images(tmp_path)
    raw = toy_config(tmp_path, mean="train", std="train", intensity={"window": [100, 200]})
    config = load_config(raw=raw)
    result = train(config, tmp_path / "run", progress=False)
    from transferlab.data import load

    train_pixels = np.clip(load("toymed", "train", tmp_path).x.numpy().astype(np.float64) / 200.0, 0, 1)
    test_pixels = np.clip(load("toymed", "test", tmp_path).x.numpy().astype(np.float64) / 200.0, 0, 1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["mean"] == pytest.approx([train_pixels.mean()], rel=1e-5)
    assert saved["std"] == pytest.approx([train_pixels.std()], rel=1e-5)
    everything = np.concatenate([train_pixels.ravel(), test_pixels.ravel()])
    assert abs(saved["mean"][0] - everything.mean()) > 0.1  # the test set (all >= 0.75) did not leak in
    assert build(config).config.data.mean == saved["mean"]  # what a rebuild computes again (a resume compares it)
    # The finished run evaluates with the recorded numbers and never needs its training data again.
    (tmp_path / "toymed" / "train.npz").unlink()
    experiment = load_for_eval(tmp_path / "run")
    assert experiment.transform.mean == tuple(saved["mean"]) and experiment.transform.std == tuple(saved["std"])
    assert evaluate_on(experiment)["acc"] == result["target_test/acc"]


def test_mean_train_keeps_given_numbers_and_needs_a_training_set(tmp_path):
    write_toy_images(tmp_path)
    config = load_config(raw=toy_config(tmp_path, mean="train", std=[0.25]))
    experiment = build(config)
    assert experiment.transform.std == (0.25,) and experiment.transform.mean != (0.5,)
    assert experiment.config.data.std == [0.25] and experiment.config.data.mean == list(experiment.transform.mean)
    with pytest.raises(ConfigError, match="training set"):
        make_modality(config, "image", [experiment.test])  # an evaluation set alone is never used for statistics


# --- training-only augmentation --------------------------------------------------------------------------------


def test_augmentation_changes_training_batches_only():
    experiment = build(tiny_config("source_only", iterations=2, data={"augment": "digits"}))
    calls = []
    augment = experiment.augment
    experiment.augment = lambda x: calls.append(1) or augment(x)  # counts every batch it touches
    trainer = experiment.trainer(None, progress=False)
    plain = build(tiny_config("source_only", iterations=2)).trainer(None, progress=False)
    torch.manual_seed(0)
    augmented, clean = next(trainer.streams["source"]), next(plain.streams["source"])
    assert calls == [1] and augmented.x.shape == clean.x.shape and not torch.equal(augmented.x, clean.x)
    assert torch.equal(augmented.y, clean.y)
    assert augmented.x.min() >= -1 and augmented.x.max() <= 1  # clamped in [0, 1] before (x - 0.5) / 0.5
    trainer.evaluate()
    assert calls == [1]  # evaluation sets are never augmented


def test_augmentation_is_per_sample_and_drawn_from_the_seed():
    augment = build(tiny_config("source_only", data={"augment": "medical"})).augment
    x = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous() * 2 - 1  # one image, eight times
    torch.manual_seed(0)
    first = augment(x)
    torch.manual_seed(0)
    again = augment(x)
    torch.manual_seed(1)
    other = augment(x)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # each sample gets its own crop
    names = [type(step).__name__ for step in view_pipeline("medical", 1, 64)]
    assert not any("Flip" in name for name in names)  # laterality matters
    flips = [type(step).__name__ for step in view_pipeline("medical_flip", 1, 64)]
    assert flips == ["RandomResizedCrop", "RandomHorizontalFlip", *names[1:]]  # medical, plus a flip


def test_medical_flip_mirrors_about_half_of_the_samples():
    torch.manual_seed(0)
    flip = view_pipeline("medical_flip", 1, 16)[1]
    x = torch.arange(16.0).view(1, 1, 1, 16).expand(400, 1, 16, 16)
    mirrored = (flip(x)[:, 0, 0, 0] == 15).float().mean()
    assert 0.4 < mirrored < 0.6


def test_a_resumed_augmented_run_matches_an_uninterrupted_one(tmp_path):
    """Same seed, same weights, bit for bit; a run stopped and resumed draws the same augmentations (the RNG is
    checkpointed), and its config (``mean: train``, resolved to the same numbers) is accepted on resume."""
    write_toy_images(tmp_path)
    raw = toy_config(tmp_path, iterations=8, augment="medical", mean="train", std="train",
                     intensity={"percentile": [1, 99]})
    raw["train"]["checkpoint_every"] = 4
    config = load_config(raw=raw)
    whole = train(config, tmp_path / "whole", progress=False)
    train(config, tmp_path / "again", progress=False)
    plain = load_config(raw={**raw, "data": {**raw["data"], "augment": None}})
    train(plain, tmp_path / "plain", progress=False)
    assert train_losses(tmp_path / "again") == train_losses(tmp_path / "whole")
    assert train_losses(tmp_path / "plain") != train_losses(tmp_path / "whole")  # augmentation reached training
    train(config, tmp_path / "cut", progress=False, stop_at=4)
    resumed = train(config, tmp_path / "cut", progress=False, resume=True)
    assert resumed["resumed_from_step"] == 4
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "whole")
    weights = [load_file(str(tmp_path / run / "model.safetensors")) for run in ("whole", "again", "cut")]
    assert all(torch.equal(weights[0][k], w[k]) for w in weights[1:] for k in weights[0])
    assert resumed["target_test/acc"] == whole["target_test/acc"]


def test_image_options_on_other_data_are_config_errors(tmp_path):
    folder = tmp_path / "toyfeatures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        np.savez_compressed(folder / f"{part}.npz", x=rng.standard_normal((16, 5)).astype(np.float32),
                            y=np.arange(16, dtype=np.int64) % 2)
    (folder / "dataset.json").write_text(json.dumps(
        {"kind": "features", "format": "npz", "num_classes": 2, "parts": ["train", "test"]}))
    raw = {"data": {"root": str(tmp_path), "source": {"name": "toyfeatures", "part": "train"},
                    "test": {"name": "toyfeatures", "part": "test"}, "batch_size": 8},
           "model": {"backbone": "mlp"}, "method": {"name": "source_only"}}
    build(load_config(raw=raw))  # the data itself is fine
    for option, match in (({"augment": "medical"}, "data.augment"), ({"intensity": {"window": [0, 1]}}, "intensity"),
                          ({"mean": "train"}, "data.mean")):
        with pytest.raises(ConfigError, match=match):
            build(load_config(raw={**raw, "data": {**raw["data"], **option}}))


# --- real data -------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_brain_mri_with_percentiles_train_statistics_and_medical_augmentation(tmp_path):
    root = shared_data_root()
    if root is None or not (root / "brain_tumor_mri" / "all_64.npz").is_file():
        pytest.skip("brain_tumor_mri not in the prepared data root")
    fold = {"k": 5, "index": 0, "seed": 0}
    raw = {
        "seed": 0,
        "data": {"root": str(root), "source": {"name": "brain_tumor_mri", "part": "all_64",
                                               "fold": {**fold, "role": "train"}},
                 "test": {"name": "brain_tumor_mri", "part": "all_64", "fold": {**fold, "role": "test"}},
                 "image_size": 32, "channels": 3, "intensity": {"percentile": [1, 99]}, "mean": "train",
                 "std": "train", "augment": "medical", "batch_size": 16},
        "model": {"backbone": "lenet", "bottleneck_dim": 16},
        "method": {"name": "source_only"},
        "train": {"iterations": 3, "eval_every": 0, "checkpoint_every": 0, "log_every": 1},
    }
    config = load_config(raw=raw)
    experiment = build(config)
    source = experiment.source.x.numpy().astype(np.float64)
    lo, hi = np.percentile(source.reshape(len(source), -1), [1, 99], axis=1)
    mapped = torch.from_numpy(np.clip((source - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)).float()
    resized = torch.nn.functional.interpolate(mapped[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    mean = experiment.transform.mean
    assert len(mean) == 3 and mean[0] == mean[1] == mean[2]  # grey repeated to 3 channels
    assert mean[0] == pytest.approx(resized.double().mean().item(), rel=1e-4)
    result = train(config, tmp_path / "run", progress=False)
    assert 0 <= result["target_test/acc"] <= 100
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["mean"] == list(mean)
