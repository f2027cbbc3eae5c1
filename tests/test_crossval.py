"""The small-data evaluation protocol (crossval.py, `transferlab cv`): k folds x seeds of runs whose train, validation
and test rows never meet, temperature scaling fitted on the validation fold only, resumable, and paired comparisons."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from transferlab import crossval
from transferlab.analysis.calibration import fit_temperature, nll
from transferlab.cli import main
from transferlab.config import read_yaml
from transferlab.crossval import cross_validate, paired_comparison, predict_logits
from transferlab.data.importers import import_dataset
from transferlab.errors import CheckpointError, ConfigError, DataError
from transferlab.experiment import load_config, load_domain, load_for_eval

DATA = Path(os.environ.get("TRANSFERLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N = 60
DUPLICATES = [0, 10, 20]  # three byte-identical rows: one duplicate group

RAW = {"data": {"source": {"name": "cvtoy", "part": "all"}, "batch_size": 8},
       "model": {"backbone": "mlp", "bottleneck_dim": 8, "mlp": {"hidden": [16]}}, "method": {"name": "source_only"},
       "train": {"iterations": 20, "eval_every": 0, "checkpoint_every": 10, "log_every": 10, "deterministic": True}}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data root with one imported 2-class feature set of N rows (a ``row`` id column, one duplicate group)."""
    folder = tmp_path_factory.mktemp("cvdata")
    rng = np.random.default_rng(0)
    y = np.arange(N) % 2
    x = (rng.standard_normal((N, 6)) + 1.5 * y[:, None]).astype(np.float32)
    duplicate = -np.ones(N, dtype=np.int64)
    duplicate[DUPLICATES] = 0
    x[DUPLICATES] = x[DUPLICATES[0]]
    y[DUPLICATES] = y[DUPLICATES[0]]
    np.savez(folder / "all.npz", x=x, y=y, row=np.arange(N), duplicate_group=duplicate)
    import_dataset("arrays", folder / "all.npz", "cvtoy", root=folder / "root", part="all")
    return folder / "root"


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory) -> tuple[Path, dict]:
    """A finished 3-fold x 2-seed cross-validation with validation folds (shared: tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("cv") / "cv"
    return out, cross_validate(load_config(raw=RAW), out, k=3, seeds=(0, 1), data_root=root, log=None)


def rows_of(domain, root) -> set[int]:
    return set(load_domain(domain, root, 0).extras["row"].tolist())


def test_cells_are_folds_times_seeds_and_train_val_test_rows_never_meet(root, finished):
    out, cv = finished
    assert [(r["seed"], r["fold"]) for r in cv["rows"]] == [(s, i) for s in (0, 1) for i in range(3)]
    for seed in (0, 1):
        tests = []
        for index in range(3):
            config = load_config(raw=json.loads((out / f"seed{seed}" / f"fold{index}" / "config.json").read_text()))
            assert config.seed == seed and config.data.source.fold.seed == seed  # seed s: partition and run
            train, test = rows_of(config.data.source, root), rows_of(config.data.test, root)
            val = rows_of(config.data.test.model_copy(update={"fold": config.data.test.fold.model_copy(
                update={"role": "val"})}), root)
            assert not train & test and not train & val and not val & test
            assert train | val | test == set(range(N))
            assert sum(bool(set(DUPLICATES) & side) for side in (train, val, test)) == 1  # duplicates stay together
            row = cv["rows"][seed * 3 + index]
            assert (row["n_train"], row["n_val"], row["n_test"]) == (len(train), len(val), len(test))
            tests.append(test)
        assert sorted(r for t in tests for r in t) == list(range(N))  # each seed: every row tested exactly once


def test_cv_json_schema_metrics_and_temperature_fitted_on_the_validation_fold_only(root, finished):
    out, cv = finished
    assert json.loads((out / "cv.json").read_text()) == json.loads(json.dumps(cv))
    assert {"protocol", "dataset", "k", "seeds", "validation", "group", "metrics", "n_bins", "config", "rows",
            "summary"} <= set(cv)
    assert (cv["dataset"], cv["k"], cv["seeds"], cv["validation"], cv["n_bins"]) == ("cvtoy/all", 3, [0, 1], True, 15)
    for row in cv["rows"]:
        assert set(row) == {"run", "seed", "fold", "n_train", "n_val", "n_test", "temperature", "temperature_at_bound",
                            "before", "after", "parameters", "train_seconds"}
        assert set(row["before"]) == set(row["after"]) == {"acc", "auc", "nll", "ece"}
        assert row["after"]["acc"] == row["before"]["acc"]  # a temperature never changes a prediction
        bound = bool(min(abs(np.log(row["temperature"] / b)) for b in (0.01, 100.0)) < 1e-3)  # the range's ends
        assert row["temperature"] > 0 and row["temperature_at_bound"] is bound
        assert row["parameters"]["total"] > 0
        assert json.loads((out / row["run"] / "cell.json").read_text()) == {k: v for k, v in row.items() if k != "run"}

    row = cv["rows"][4]  # seed 1, fold 1: recompute from the run's model
    experiment = load_for_eval(out / row["run"], root)
    z_test = predict_logits(experiment)
    assert row["before"]["nll"] == pytest.approx(nll(z_test, experiment.test.y))
    val_domain = experiment.config.data.test.model_copy(update={"fold": experiment.config.data.test.fold.model_copy(
        update={"role": "val"})})
    val = experiment.modality.prepare(load_domain(val_domain, root, 1))
    assert row["temperature"] == pytest.approx(fit_temperature(predict_logits(experiment, val), val.y))
    assert row["temperature"] != pytest.approx(fit_temperature(z_test, experiment.test.y))  # not the test fold's

    s = cv["summary"]
    acc = [r["before"]["acc"] for r in cv["rows"]]
    assert s["cells"] == 6 and s["before"]["acc"]["n"] == 6
    assert s["before"]["acc"]["mean"] == pytest.approx(np.mean(acc))
    assert s["before"]["acc"]["std"] == pytest.approx(np.std(acc, ddof=1))
    assert s["after"]["nll"]["mean"] == pytest.approx(np.mean([r["after"]["nll"] for r in cv["rows"]]))
    text = (out / "cv.md").read_text()
    at_bound = sum(r["temperature_at_bound"] for r in cv["rows"])
    assert (f"In {at_bound} of 6 cells the temperature reached" in text) is (at_bound > 0)
    assert f"| acc | {s['before']['acc']['mean']:.3f} ± {s['before']['acc']['std']:.3f} (n=6) |" in text


def test_a_killed_cross_validation_resumes_and_skips_finished_cells(root, finished, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    shutil.copytree(finished[0], out)
    calls = []
    real = crossval.train
    monkeypatch.setattr(crossval, "train", lambda *a, **kw: calls.append(kw.get("resume")) or real(*a, **kw))
    kept = out / "seed0" / "fold0" / "cell.json"
    stamp = kept.stat().st_mtime_ns
    (out / "seed0" / "fold1" / "cell.json").unlink()  # killed after training, before its metrics were written
    for name in ("result.json", "model.safetensors", "cell.json"):  # killed mid-training, after a checkpoint
        (out / "seed1" / "fold2" / name).unlink()
    cv = cross_validate(load_config(raw=RAW), out, k=3, seeds=(0, 1), data_root=root, log=None)
    assert calls == [True]  # one run continued from its checkpoint; the five others were not trained again
    assert json.loads((out / "seed1" / "fold2" / "result.json").read_text())["resumed_from_step"] == 20
    assert kept.stat().st_mtime_ns == stamp
    for before, again in zip(finished[1]["rows"], cv["rows"]):
        assert again["before"] == pytest.approx(before["before"]) and again["temperature"] == pytest.approx(
            before["temperature"])

    changed = load_config(raw=RAW, overrides=["optim.lr=0.5"])
    with pytest.raises(CheckpointError, match="another config"):
        cross_validate(changed, out, k=3, seeds=(0, 1), data_root=root, log=None)
    with pytest.raises(CheckpointError, match="another config"):  # other folds are another config too
        cross_validate(load_config(raw=RAW), out, k=4, seeds=(0,), data_root=root, log=None)


def test_cells_trained_in_worker_processes_give_the_same_rows(root, finished, tmp_path):
    cv = cross_validate(load_config(raw=RAW), tmp_path / "cv", k=3, seeds=(1,), data_root=root, jobs=2, log=None)
    for mine, single in zip(cv["rows"], finished[1]["rows"][3:]):
        assert (mine["seed"], mine["fold"], mine["n_test"]) == (single["seed"], single["fold"], single["n_test"])
        assert mine["before"] == pytest.approx(single["before"]) and mine["after"] == pytest.approx(single["after"])


def test_without_validation_training_uses_k_minus_1_folds_and_nothing_is_scaled(root, tmp_path):
    cv = cross_validate(load_config(raw=RAW), tmp_path / "cv", k=2, seeds=(3,), data_root=root, validation=False,
                        log=None)
    assert [(r["seed"], r["fold"]) for r in cv["rows"]] == [(3, 0), (3, 1)]
    for row in cv["rows"]:
        assert row["after"] is None and row["temperature"] is None and row["n_val"] is None
        assert row["n_train"] + row["n_test"] == N
    assert cv["summary"]["after"] is None and "no temperature scaling" in (tmp_path / "cv" / "cv.md").read_text()


def test_protocol_errors_are_clear(root, tmp_path):
    config = load_config(raw=RAW)
    with pytest.raises(ConfigError, match="needs k >= 3"):
        cross_validate(config, tmp_path / "a", k=2, seeds=(0,), data_root=root)
    with pytest.raises(ConfigError, match="repeat a seed"):
        cross_validate(config, tmp_path / "a", k=3, seeds=(0, 0), data_root=root)
    folded = load_config(raw=RAW, overrides=["data.source.fold={index: 0, role: train}"])
    with pytest.raises(ConfigError, match="chooses data.source.fold itself"):
        cross_validate(folded, tmp_path / "a", k=3, data_root=root)
    leaky = load_config(raw=RAW, overrides=["data.target={name: cvtoy, part: all}"])
    with pytest.raises(ConfigError, match="would be seen in training"):
        cross_validate(leaky, tmp_path / "a", k=3, data_root=root)
    assert not (tmp_path / "a").exists()


def cell(seed, fold, value, *, n_test=20, n_train=40, metric="auc", after=None):
    return {"seed": seed, "fold": fold, "n_test": n_test, "n_train": n_train, "before": {metric: value},
            "after": after}


def test_paired_comparison_matches_cells_and_computes_the_paired_statistics():
    a = [cell(0, 0, 0.9), cell(0, 1, 0.8), cell(1, 0, 0.7), cell(1, 1, 0.75)]
    b = [cell(1, 1, 0.75), cell(0, 0, 0.85), cell(1, 0, 0.72), cell(0, 1, 0.6)]  # other order: matched by cell
    random.Random(0).shuffle(b)
    result = paired_comparison(a, b, "auc")
    diffs = np.array([0.05, 0.2, -0.02, 0.0])  # (0,0), (0,1), (1,0), (1,1)
    assert result["n"] == 4 and result["mean_diff"] == pytest.approx(diffs.mean())
    assert result["std_diff"] == pytest.approx(diffs.std(ddof=1))
    assert (result["wins"], result["losses"], result["ties"]) == (2, 1, 1)
    assert result["p_value"] == pytest.approx(stats.ttest_rel([0.9, 0.8, 0.7, 0.75], [0.85, 0.6, 0.72, 0.75]).pvalue)
    t = diffs.mean() / np.sqrt((1 / 4 + 20 / 40) * diffs.var(ddof=1))  # Nadeau & Bengio's corrected variance
    assert result["p_value_corrected"] == pytest.approx(2 * stats.t.sf(abs(t), df=3))
    assert result["p_value_corrected"] > result["p_value"]
    assert [(d["seed"], d["fold"]) for d in result["diffs"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [d["diff"] for d in result["diffs"]] == pytest.approx(diffs.tolist())

    lower = paired_comparison([cell(0, 0, 0.3, metric="nll"), cell(0, 1, 0.5, metric="nll")],
                              [cell(0, 0, 0.4, metric="nll"), cell(0, 1, 0.4, metric="nll")], "nll")
    assert (lower["wins"], lower["losses"], lower["higher_is_better"]) == (1, 1, False)  # lower NLL wins
    same = paired_comparison([cell(0, 0, 0.9), cell(0, 1, 0.8)], [cell(0, 0, 0.9), cell(0, 1, 0.8)])
    assert same["ties"] == 2 and same["p_value"] is None  # no variance: no test, not p = nan
    scaled = paired_comparison([cell(0, 0, 0.9, after={"ece": 0.1}), cell(0, 1, 0.9, after={"ece": 0.3})],
                               [cell(0, 0, 0.9, after={"ece": 0.2}), cell(0, 1, 0.9, after={"ece": 0.2})], "after.ece")
    assert scaled["metric"] == "after.ece" and scaled["mean_diff"] == pytest.approx(0.0)


def test_paired_comparison_refuses_cells_that_do_not_match():
    a = [cell(0, 0, 0.9), cell(0, 1, 0.8)]
    with pytest.raises(DataError, match="only in A: seed 0 fold 1; only in B: seed 1 fold 1"):
        paired_comparison(a, [cell(0, 0, 0.9), cell(1, 1, 0.8)])
    with pytest.raises(DataError, match="20 test rows in A and 21 in B"):
        paired_comparison(a, [cell(0, 0, 0.9), cell(0, 1, 0.8, n_test=21)])
    with pytest.raises(DataError, match="two rows for seed 0 fold 0"):
        paired_comparison(a + [cell(0, 0, 0.5)], a)
    with pytest.raises(DataError, match="no temperature scaling"):
        paired_comparison(a, a, "after.auc")
    with pytest.raises(ConfigError, match="unknown metric 'f1'"):
        paired_comparison(a, a, "f1")


def test_cli_cv_and_compare_end_to_end(root, tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(json.dumps(RAW))  # JSON is YAML
    assert read_yaml(config) == RAW
    common = ["--folds", "3", "--seeds", "0", "1", "--data-root", str(root), "--no-progress"]
    assert main(["cv", str(config), *common, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and "| auc |" in out and "after temperature scaling" in out
    assert main(["cv", str(config), *common, "--set", "optim.lr=0.001", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["cv", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "nll"]) == 0
    out = capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "cv.json").read_text())["rows"]
    b = json.loads((tmp_path / "b" / "cv.json").read_text())["rows"]
    diff = np.mean([x["before"]["nll"] - y["before"]["nll"] for x, y in zip(a, b)])
    assert f"A - B {diff:+.4f}" in out and "over 6 paired cells" in out and "Nadeau & Bengio" in out

    assert main(["cv", str(config), "--folds", "3", "--seeds", "0", "--data-root", str(root), "--no-progress",
                 "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    code = main(["cv", "compare", str(tmp_path / "a"), str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "only in A: seed 1 fold 0" in err and "Traceback" not in err
    code = main(["cv", "compare", str(tmp_path / "a")])
    assert code == 2 and "two cross-validation folders" in capsys.readouterr().err
    code = main(["cv", "compare", str(tmp_path / "a"), str(tmp_path / "missing")])
    assert code == 2 and "not a finished cross-validation" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "brain_tumor_mri" / "all_64.npz").is_file(), reason="needs the prepared brain_tumor_mri")
def test_brain_mri_cross_validation_keeps_duplicates_in_one_fold(tmp_path):
    raw = {"data": {"source": {"name": "brain_tumor_mri", "part": "all_64"}, "image_size": 16, "batch_size": 16},
           "model": {"backbone": "lenet", "bottleneck_dim": 16}, "method": {"name": "source_only"},
           "train": {"iterations": 4, "eval_every": 0, "checkpoint_every": 0, "log_every": 2, "deterministic": True}}
    cv = cross_validate(load_config(raw=raw), tmp_path / "cv", k=3, seeds=(0,), data_root=DATA, log=None)
    assert len(cv["rows"]) == 3 and sum(r["n_test"] for r in cv["rows"]) == 253
    for row in cv["rows"]:
        config = load_config(raw=json.loads((tmp_path / "cv" / row["run"] / "config.json").read_text()))
        sets = [load_domain(d, DATA, 0) for d in (config.data.source, config.data.test)]
        names = [set(s.extras["names"].tolist()) for s in sets]
        groups = [set(s.extras["duplicate_group"].tolist()) - {-1} for s in sets]
        assert not names[0] & names[1] and not groups[0] & groups[1]
        assert row["after"]["acc"] == row["before"]["acc"] and 0 <= row["before"]["auc"] <= 1
