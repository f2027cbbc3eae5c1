"""The medical-imaging pieces of issue #16 on saved runs: the engine's calibration metrics (nll, ece, auc) of a
trained model and their gather across processes, and `transferlab analyze calibration|gradcam` end to end on a
binary view of the embedded digits (0-4 against 5-9): the files they write, their numbers against independent
computations on the run's own model, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import tiny_config
from transferlab.analysis.calibration import auc, ece, fit_temperature, nll
from transferlab.analysis.gradcam import PAD, TITLE_HEIGHT, pick_images
from transferlab.cli import main as cli
from transferlab.config import DomainConfig
from transferlab.engine.metrics import MetricsLog
from transferlab.errors import ConfigError
from transferlab.experiment import load_config, load_for_eval, train

VIEW = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """A source-only LeNet trained 30 steps on digits, evaluated on digits_m (225 test images) in batches of 64."""
    out = tmp_path_factory.mktemp("medical") / "run"
    config = tiny_config("source_only", iterations=30, data={
        "source": {"name": "digits", "classes": VIEW}, "target": {"name": "digits_m", "classes": VIEW},
        "eval_batch_size": 64})
    return out, train(config, out, progress=False)


def logits_of(run, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's model on digits_m:<part> (binary view), in one forward pass: independent of the code under test."""
    experiment = load_for_eval(run, on=DomainConfig(name="digits_m", part=part, classes=VIEW))
    method = experiment.method.eval()
    with torch.no_grad():
        z = method.predict(experiment.transform(experiment.test.x)).double().numpy()
    return z, experiment.test.y.numpy()


def softmax(z: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(z), dim=1).numpy()


# ---------------------------------------------------------------- the engine


def test_trainer_evaluate_reports_nll_ece_and_auc_of_the_models_predictions(binary_run):
    run, result = binary_run
    z, y = logits_of(run, "test")
    p = softmax(z)
    assert {"target_test/acc", "target_test/macro_f1", "target_test/nll", "target_test/ece",
            "target_test/auc"} <= set(result)
    # four evaluation batches of 64, 64, 64, 33: every one counts (not only the last)
    assert result["target_test/acc"] == pytest.approx(100 * np.mean(z.argmax(1) == y))
    assert result["target_test/nll"] == pytest.approx(nll(z, y), rel=1e-6)
    assert result["target_test/ece"] == pytest.approx(ece(p, y, n_bins=15), abs=1e-6)
    assert result["target_test/auc"] == pytest.approx(auc(p[:, 1], y), abs=1e-6)
    evals = [r for r in MetricsLog.read(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["target_test/auc"] == result["target_test/auc"]


def test_transferlab_eval_reports_the_same_calibration_metrics_as_training(binary_run, capsys):
    from transferlab.cli import main

    run, result = binary_run
    assert main(["eval", str(run)]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads(printed[printed.index("{"):printed.rindex("}") + 1])
    found = {k: v for k, v in evaluated.items() if k.split("/")[-1] in ("nll", "ece", "auc")}
    assert {k.split("/")[-1] for k in found} == {"nll", "ece", "auc"}
    for key, value in found.items():
        assert value == pytest.approx(result[f"target_test/{key.split('/')[-1]}"], abs=1e-6), key


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from transferlab.engine.distributed import gather_rows

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = torch.arange(5.0 * (2 + 2 * rank), dtype=torch.float64).view(-1, 5) + 1000 * rank  # 2 rows, 4 rows
        torch.save(gather_rows(rows, world), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes that each import torch: ~10 s on the 2-core machine
def test_prediction_rows_of_uneven_shards_are_gathered_in_rank_order(tmp_path):
    """Two gloo processes with 2 and 4 rows: both get all 6, rank 0's first (the padding cut off)."""
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = torch.cat([torch.arange(10.0, dtype=torch.float64).view(2, 5),
                          torch.arange(20.0, dtype=torch.float64).view(4, 5) + 1000])
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), expected)


# ---------------------------------------------------------------- analyze calibration


def test_analyze_calibration_fits_on_val_and_reports_the_test_set(binary_run, tmp_path, capsys):
    run, result = binary_run
    out = tmp_path / "cal"
    assert cli(["analyze", "calibration", str(run), "--val", "digits_m:train", "--bins", "10", "--out", str(out)]) == 0
    report = json.loads((out / "calibration.json").read_text())
    png = (out / "reliability.png").read_bytes()
    assert png[:8] == PNG and len(png) > 5_000
    assert (report["test"], report["val"], report["classes"], report["n_bins"]) == ("digits_m/test", "digits_m/train",
                                                                                     2, 10)
    zv, yv = logits_of(run, "train")
    zt, yt = logits_of(run, "test")
    assert report["n_val"] == len(yv) and report["n_test"] == len(yt)
    t = report["temperature"]
    assert t == pytest.approx(fit_temperature(zv, yv), rel=1e-4)  # fitted on --val, never on the test set
    assert t != pytest.approx(fit_temperature(zt, yt), rel=1e-2)
    before, after, val_before, val_after = (report[k] for k in ("before", "after", "val_before", "val_after"))
    assert val_after["nll"] <= val_before["nll"]  # T minimises the validation NLL; T = 1 is a candidate
    for a, b in ((before, after), (val_before, val_after)):  # T keeps every argmax and every ranking
        assert a["acc"] == b["acc"] and a["auc"] == pytest.approx(b["auc"])
    # the uncalibrated test numbers are the run's own evaluation of the same model, and --bins is used
    assert 100 * before["acc"] == pytest.approx(result["target_test/acc"])
    assert before["nll"] == pytest.approx(result["target_test/nll"], rel=1e-6)
    assert before["auc"] == pytest.approx(result["target_test/auc"], abs=1e-6)
    assert before["ece"] == pytest.approx(ece(softmax(zt), yt, n_bins=10), abs=1e-6)
    assert after["nll"] == pytest.approx(nll(zt / t, yt), rel=1e-6)
    assert after["ece_mass"] == pytest.approx(ece(softmax(zt / t), yt, n_bins=10, strategy="mass"), abs=1e-6)
    assert set(report["reliability"]) == {"before", f"after (T={t:.2f})"}
    assert all(len(d["edges"]) == 11 and sum(d["count"]) == len(yt) for d in report["reliability"].values())
    assert f"temperature T = {t:.4f}" in capsys.readouterr().out


def test_analyze_calibration_without_val_reports_uncalibrated_metrics_only(binary_run, tmp_path, capsys):
    run, result = binary_run
    assert cli(["analyze", "calibration", str(run), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert report["temperature"] is None and report["after"] is None and report["val"] is None
    assert report["before"]["ece"] == pytest.approx(result["target_test/ece"], abs=1e-6)  # 15 bins by default
    assert list(report["reliability"]) == ["before"] and (tmp_path / "reliability.png").is_file()
    assert "no --val set" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--val", "digits_m:test"], "is the set the report scores"),
    (["--val", "digits_m"], "has no val or validation part"),
    (["--val", "digits_m:valid"], "has no part 'valid'"),
    (["--on", "digits_m:tset"], "Did you mean 'test'"),
    (["--bins", "0"], "--bins must be a positive integer"),
])
def test_analyze_calibration_refuses_bad_sets_clearly(binary_run, tmp_path, capsys, args, message):
    run, _ = binary_run
    assert cli(["analyze", "calibration", str(run), *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- analyze gradcam


def test_analyze_gradcam_draws_the_chosen_images_with_their_predictions(binary_run, tmp_path):
    run, _ = binary_run
    out = tmp_path / "cam"
    assert cli(["analyze", "gradcam", str(run), "--indices", "3", "0", "7", "--out", str(out)]) == 0
    report = json.loads((out / "gradcam.json").read_text())
    z, y = logits_of(run, "test")
    chosen = [3, 0, 7]
    assert [r["index"] for r in report["images"]] == chosen  # in the order given
    assert [r["label"] for r in report["images"]] == y[chosen].tolist()
    assert [r["predicted"] for r in report["images"]] == z[chosen].argmax(1).tolist()
    np.testing.assert_allclose([r["probability"] for r in report["images"]], softmax(z[chosen]).max(1), rtol=1e-5)
    assert report["layer"] == "encoder.backbone.conv.3"  # LeNet's last convolution
    # 16x16 inputs enlarged 8x to 128 px; three (image | map) cells in one row under their captions
    sheet = Image.open(out / "gradcam.png")
    assert sheet.size == (3 * (2 * 128 + PAD) + 4 * PAD, 128 + TITLE_HEIGHT + 2 * PAD)
    # the first cell's image is the model's input (digits_m:test #3), brought back from the normalisation to [0, 1]
    experiment = load_for_eval(run)
    shown = (experiment.transform(experiment.test.x[3:4])[0] * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
    expected = np.kron(np.round(shown * 255).astype(np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    top = PAD + TITLE_HEIGHT
    drawn = np.array(sheet.convert("RGB"))[top:top + 128, PAD:PAD + 128].astype(int)
    assert np.abs(drawn - expected).max() <= 1  # rounding of interpolated pixels at .5 may differ by one level


def test_analyze_gradcam_draws_seeded_random_images_at_a_chosen_layer(binary_run, tmp_path, capsys):
    run, _ = binary_run
    args = ["analyze", "gradcam", str(run), "--n", "5", "--seed", "2", "--layer", "encoder.backbone.conv.0"]
    assert cli([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gradcam.json").read_text())
    assert [r["index"] for r in report["images"]] == pick_images(225, 5, seed=2)
    assert report["layer"] == "encoder.backbone.conv.0" and report["seed"] == 2
    assert "gradcam.png" in capsys.readouterr().out and (tmp_path / "gradcam.png").stat().st_size > 1_000


@pytest.mark.parametrize("args, message", [
    (["--layer", "encoder.backbone.conv.9"], "has no layer 'encoder.backbone.conv.9'. Did you mean"),
    (["--layer", "encoder.bottleneck"], "pick a convolutional layer as --layer"),
    (["--indices", "5", "225"], "outside the 225 test images"),
    (["--n", "0"], "no images to draw"),
])
def test_analyze_gradcam_refuses_bad_layers_and_images_clearly(binary_run, tmp_path, capsys, args, message):
    run, _ = binary_run
    assert cli(["analyze", "gradcam", str(run), *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "gradcam.png").exists()


def test_gradcam_needs_a_convolution_and_lists_the_layers_it_has():
    from transferlab.reports.gradcam import target_layer

    with pytest.raises(ConfigError, match="no convolutional layer.*convolutional backbone"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), None, "runs/mlp")
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    with pytest.raises(ConfigError, match="Its convolutional layers: 0, 2"):
        target_layer(net, "3", "runs/x")


@pytest.mark.data
def test_analyze_gradcam_refuses_a_feature_vector_run(data_root, tmp_path, capsys):
    out = tmp_path / "surf"
    config = load_config(raw={
        "data": {"root": str(data_root), "source": {"name": "office_caltech10_surf", "part": "amazon"},
                 "target": {"name": "office_caltech10_surf", "part": "webcam"}, "batch_size": 16},
        "model": {"backbone": "mlp", "bottleneck_dim": 32}, "method": {"name": "source_only"},
        "train": {"iterations": 2, "eval_every": 0, "checkpoint_every": 0, "log_every": 1}})
    train(config, out, progress=False)
    assert cli(["analyze", "gradcam", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "Grad-CAM explains image classifiers" in capsys.readouterr().err
    # calibration needs no convolution: the same run is analysed
    assert cli(["analyze", "calibration", str(out), "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "calibration.json").read_text())["classes"] == 10
    assert math.isfinite(json.loads((tmp_path / "c" / "calibration.json").read_text())["before"]["nll"])
