"""`transferlab analyze` on saved runs: each subcommand writes its JSON and PNG with sane values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config
from transferlab.cli import main as cli
from transferlab.experiment import train


@pytest.fixture(scope="module")
def da_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for method in ("source_only", "dann"):
        out = root / method
        train(tiny_config(method, iterations=30), out, progress=False)
        runs.append(out)
    return runs


def test_divergence_report_of_saved_runs(da_runs, tmp_path, capsys):
    assert cli(["analyze", "divergence", *map(str, da_runs), "--out", str(tmp_path), "--max-samples", "5000"]) == 0
    reports = json.loads((tmp_path / "divergence.json").read_text())
    assert [r["method"] for r in reports] == ["source_only", "dann"]
    for r in reports:
        assert 0.0 <= r["a_distance"] <= 2.0 and r["a_distance"] == pytest.approx(max(0.0, r["a_distance_raw"]))
        assert r["a_distance_raw"] == pytest.approx(2 * (1 - 2 * r["domain_error"]))
        assert 0.0 <= r["lambda"] <= 2.0 and 0.0 <= r["target_error"] <= 100.0
    # the reported target error is the run's own evaluation (same model, same test set: 1 - accuracy)
    result = json.loads((da_runs[0] / "result.json").read_text())
    assert reports[0]["target_error"] == pytest.approx(100.0 - result["target_test/acc"], abs=1e-6)
    assert (tmp_path / "divergence.png").stat().st_size > 5_000
    assert "lambda uses target labels" in capsys.readouterr().out


def test_feature_map_and_landscape(da_runs, tmp_path):
    assert cli(["analyze", "features", str(da_runs[1]), "--out", str(tmp_path), "--max-samples", "150"]) == 0
    assert (tmp_path / "tsne_dann.png").stat().st_size > 5_000
    assert cli(["analyze", "landscape", str(da_runs[0]), "--out", str(tmp_path), "--max-samples", "128"]) == 0
    info = json.loads((tmp_path / "landscape_source_only.json").read_text())
    line = dict(zip(np.round(info["alphas"], 3), info["interpolation_loss"]))
    assert line[1.0] < line[0.0]  # the trained weights fit the training data better than the initialisation
    assert info["slice_center_loss"] == pytest.approx(line[1.0], rel=1e-4)  # the slice is centred on the solution
    assert info["sharpness"] == pytest.approx(info["sharpness"]) and (tmp_path / "landscape_source_only.png").is_file()


def test_scores_need_accuracies_and_enough_candidates(da_runs, tmp_path, capsys):
    assert cli(["analyze", "scores", str(da_runs[0]), "--out", str(tmp_path)]) == 2
    assert "--accuracies" in capsys.readouterr().err
    assert cli(["analyze", "divergence", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "not a transferlab run" in capsys.readouterr().err


def test_scores_rank_pretrained_candidates(tmp_path, capsys):
    from test_selftaught import _pretrain_config

    runs = []
    for seed, iterations in ((0, 2), (1, 6), (2, 12)):
        out = tmp_path / f"ae{seed}"
        assert cli(["pretrain", str(_pretrain_config(tmp_path, seed=seed, iterations=iterations)), "--out", str(out),
                    "--no-progress"]) == 0
        runs.append(str(out))
    assert cli(["analyze", "scores", *runs, "--accuracies", "50", "60", "70", "--out", str(tmp_path / "s")]) == 0
    report = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert report["n_candidates"] == 3 and [c["finetuned_acc"] for c in report["candidates"]] == [50, 60, 70]
    for key in ("logme", "h_score", "transrate"):
        assert -1.0 <= report["correlation"][key]["weighted_kendall_tau"] <= 1.0
        assert all(np.isfinite(c[key]) for c in report["candidates"])
