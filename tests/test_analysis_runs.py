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
    assert np.isfinite(info["sharpness"]) and info["sharpness"] > 0  # the loss rises around a trained solution
    assert (tmp_path / "landscape_source_only.png").is_file()


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


def test_adda_reports_each_domain_through_its_own_encoder():
    import torch

    from transferlab.methods import METHODS
    from transferlab.models import Encoder
    from transferlab.models.backbones import MLP

    torch.manual_seed(0)
    method = METHODS.get("adda")(Encoder(MLP(8, hidden=16), bottleneck_dim=0), 3).eval()
    with torch.no_grad():
        for p in method.target_encoder.parameters():
            p.add_(torch.randn_like(p))  # a target encoder that differs from the source encoder
    x = torch.randn(5, 8)
    assert torch.equal(method.representation(x, "target"), method.encoder(x))  # stage 2 not reached yet
    method.adapted.fill_(True)
    assert torch.equal(method.representation(x, "source"), method.encoder(x))
    assert torch.equal(method.representation(x, "target"), method.target_encoder(x))
    assert torch.equal(method.predict_on(x, "source"), method.head(method.encoder(x)))
    assert torch.equal(method.predict(x), method.head(method.target_encoder(x)))


def test_layers_of_an_encoder_group_normalisation_with_the_layer_before():
    from transferlab.models import Encoder, LeNet
    from transferlab.models.layers import encoder_layers

    layers = encoder_layers(Encoder(LeNet(1, 28), 16))
    assert layers == [["backbone.conv.0"], ["backbone.conv.3"], ["backbone.fc.1"], ["bottleneck.0", "bottleneck.1"]]


def _layer_configs(tmp_path, iterations=3):
    for name, classes in (("a", [0, 1, 2, 3, 4]), ("b", [5, 6, 7, 8, 9])):
        (tmp_path / f"{name}.yaml").write_text(json.dumps({
            "data": {"source": {"name": "digits", "classes": classes}, "test": {"name": "digits", "part": "test",
                     "classes": classes}, "image_size": 16, "channels": 1, "batch_size": 16},
            "model": {"backbone": "lenet", "bottleneck_dim": 16}, "method": {"name": "supervised"},
            "train": {"iterations": iterations, "eval_every": 0, "checkpoint_every": 0, "log_every": 1}}))
    return tmp_path / "a.yaml", tmp_path / "b.yaml"


def test_init_layers_copies_and_freeze_layers_freezes_exactly_the_first_n(tmp_path):
    import torch

    from transferlab.engine.checkpoint import load_tensors
    from transferlab.experiment import build, load_config
    from transferlab.errors import ConfigError

    config_a, config_b = _layer_configs(tmp_path)
    base = tmp_path / "baseA"
    train(load_config(config_a), base, progress=False)
    trained = {k.removeprefix("encoder."): v for k, v in load_tensors(base / "model.safetensors").items()
               if k.startswith("encoder.")}
    fresh = build(load_config(config_b)).method.encoder.state_dict()
    copied = build(load_config(config_b, [f"model.encoder_init={base}", "model.init_layers=2"])).method.encoder.state_dict()
    for key in fresh:
        first_two = key.startswith(("backbone.conv.0.", "backbone.conv.3."))
        assert torch.equal(copied[key], trained[key] if first_two else fresh[key]), key
    experiment = build(load_config(config_b, [f"model.encoder_init={base}", "model.init_layers=2", "model.freeze_layers=2",
                                              "train.iterations=5"]))
    before = {k: v.clone() for k, v in experiment.method.encoder.state_dict().items()}
    experiment.trainer(None, progress=False).fit()
    after = experiment.method.encoder.state_dict()
    for key in before:
        frozen = key.startswith(("backbone.conv.0.", "backbone.conv.3."))
        assert torch.equal(before[key], after[key]) == frozen, key
    with pytest.raises(ConfigError, match="encoder has 4 layers"):
        build(load_config(config_b, [f"model.encoder_init={base}", "model.init_layers=5"]))
    with pytest.raises(ConfigError, match="set that too"):
        build(load_config(config_b, ["model.init_layers=1"]))


def test_analyze_layers_writes_the_four_curves(tmp_path, capsys):
    config_a, config_b = _layer_configs(tmp_path)
    out = tmp_path / "layers"
    assert cli(["analyze", "layers", "--task-a", str(config_a), "--task-b", str(config_b), "--out", str(out),
                "--seeds", "0"]) == 0
    report = json.loads((out / "layers.json").read_text())
    assert report["n_layers"] == 4 and set(report["curves"]) == {"BnB", "BnB+", "AnB", "AnB+"}
    assert all(set(curve) == {"1", "2", "3", "4"} for curve in report["curves"].values())
    assert (out / "layers.png").stat().st_size > 10_000
    capsys.readouterr()
    assert cli(["analyze", "layers", "--task-a", str(config_a), "--task-b", str(config_b), "--out", str(out),
                "--seeds", "0"]) == 0
    assert "16 runs, 16 already done" in capsys.readouterr().out


def test_task2vec_distance_matrix_over_tasks(tmp_path):
    from test_selftaught import _pretrain_config

    probe = tmp_path / "probe"
    assert cli(["pretrain", str(_pretrain_config(tmp_path)), "--out", str(probe), "--no-progress"]) == 0
    out = tmp_path / "t2v"
    assert cli(["analyze", "task2vec", str(probe), "--tasks", "digits", "digits_m", "digits:test", "--max-samples", "40",
                "--out", str(out)]) == 0
    report = json.loads((out / "task2vec.json").read_text())
    d = np.array(report["distances"])
    assert report["names"] == ["digits", "digits_m", "digits:test"]
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0) and (d >= 0).all() and (d <= 1).all()
    # two samples of the same task are closer than the same digits on colour photos
    assert d[0, 2] < d[0, 1]
    assert (out / "task2vec.png").stat().st_size > 5_000


def test_cka_between_the_layers_of_two_runs(da_runs, tmp_path, capsys):
    assert cli(["analyze", "cka", str(da_runs[0]), str(da_runs[0]), "--out", str(tmp_path / "same"),
                "--max-samples", "200"]) == 0
    same = json.loads((tmp_path / "same" / "cka.json").read_text())
    assert len(same["layers_a"]) == 4 and np.allclose(np.diag(same["cka"]), 1.0)  # a run against itself
    assert cli(["analyze", "cka", *map(str, da_runs), "--out", str(tmp_path / "pair"), "--max-samples", "200"]) == 0
    pair = np.array(json.loads((tmp_path / "pair" / "cka.json").read_text())["cka"])
    assert ((pair >= 0) & (pair <= 1 + 1e-9)).all() and not np.allclose(np.diag(pair), 1.0)
    assert (tmp_path / "pair" / "cka.png").stat().st_size > 5_000
    assert cli(["analyze", "cka", str(da_runs[0]), "--out", str(tmp_path / "one")]) == 2
    assert "compares two runs" in capsys.readouterr().err


def test_transfer_check_flags_against_source_only_and_target_scratch(da_runs, tmp_path, capsys):
    assert cli(["analyze", "transfer", *map(str, da_runs), "--labels-per-class", "2", "--seeds", "0",
                "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "transfer.json").read_text())
    methods = report["methods"]
    assert set(methods) == {"source_only", "dann", "target_scratch_2"}
    dann, source_only, own = methods["dann"], methods["source_only"], methods["target_scratch_2"]
    assert dann["gain_vs_source_only"] == pytest.approx(dann["mean"] - source_only["mean"])
    assert dann["negative_transfer"] == (dann["gain_vs_source_only"] < -(dann["std"] + source_only["std"]))
    assert source_only["negative_transfer"] == (source_only["mean"] - own["mean"] < -(source_only["std"] + own["std"]))
    assert (tmp_path / "runs" / "target_scratch_seed0" / "result.json").is_file()
    assert cli(["analyze", "transfer", str(da_runs[1]), "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert "include the task's source_only runs" in capsys.readouterr().err


def _source_model(root, name: str, seed: int = 0, iterations: int = 20):
    """A supervised LeNet on an embedded dataset, as configs/analysis/sources/ make them (tiny)."""
    config = tiny_config("supervised", iterations=iterations, data={"source": {"name": name}, "target": None,
                                                                    "test": {"name": name, "part": "test"}})
    out = root / f"{name}{seed}"
    train(config.model_copy(update={"seed": seed}), out, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def source_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return [_source_model(root, "digits_m", 0), _source_model(root, "digits_m", 1, iterations=40),
            _source_model(root, "digits", 0)]


def test_any_run_transfers_to_a_target_dataset(source_models, tmp_path):
    from transferlab.errors import ConfigError, TransferlabError
    from transferlab.experiment import method_config
    from transferlab.protocol import grid_cells, transfer_config

    config = transfer_config(source_models[0], "finetune", 5, seed=1, target="digits")
    assert (config.data.source.name, config.data.source.part, config.data.source.labels_per_class) == ("digits", "train", 5)
    assert (config.data.test.name, config.data.test.part) == ("digits", "test")
    assert config.model.encoder_init is not None and method_config(config).name == "supervised"
    with pytest.raises(ConfigError, match="--target NAME"):  # no target and no section: say what to give
        transfer_config(source_models[0], "finetune", 5)
    with pytest.raises(ConfigError, match="no train/test part"):
        transfer_config(source_models[0], "finetune", 5, target="office_caltech10_images")
    with pytest.raises(TransferlabError, match="unknown dataset"):
        transfer_config(source_models[0], "finetune", 5, target="mnits")
    # source models of different datasets are told apart in the grid's labels
    cells = grid_cells(source_models, [5], ["finetune", "scratch"], seeds=[0, 1], target="digits")
    assert sorted({c.label for c in cells}) == ["digits/supervised+finetune", "digits_m/supervised+finetune", "scratch"]
    assert {c.run_dir for c in cells if c.label.startswith("digits_m/") and c.seed == 1} == {source_models[1]}
    assert all(c.target == "digits" for c in cells)


def test_source_selection_scores_and_task2vec_gain(source_models, tmp_path, capsys):
    grid = tmp_path / "grid"
    assert cli(["grid", *source_models, "--target", "digits", "--labels-per-class", "3", "--strategies", "finetune",
                "scratch", "--seeds", "0", "1", "--set", "train.iterations=10", "--out", str(grid)]) == 0
    records = json.loads((grid / "results.json").read_text())
    assert {r["target"] for r in records} == {"digits"} and all("gain_vs_scratch" in r for r in records if r["method"] != "scratch")
    # the same folder for another target would mix cells of two tasks: refused
    assert cli(["grid", *source_models, "--target", "digits_m", "--labels-per-class", "3", "--out", str(grid)]) == 2
    assert "holds grid cells on digits, not digits_m" in capsys.readouterr().err
    # scores on the target: the supervised candidates have source classifiers, so LEEP and NCE are computed too
    assert cli(["analyze", "scores", *source_models, "--target", "digits", "--accuracies-from", str(grid),
                "--labels-per-class", "3", "--max-samples", "200", "--out", str(tmp_path / "s")]) == 0
    report = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert report["target"] == "digits" and set(report["correlation"]) == {"logme", "h_score", "transrate", "leep", "nce"}
    for c in report["candidates"]:
        assert c["leep"] < 0 and np.isfinite(c["nce"]) and c["nce"] <= 0  # both are log-likelihoods
    # Task2Vec distance of each (source, target) pair against the gains the grids measured (two targets)
    assert cli(["grid", *source_models, "--target", "digits_m", "--labels-per-class", "3", "--strategies", "finetune",
                "scratch", "--seeds", "0", "1", "--set", "train.iterations=10", "--out", str(tmp_path / "grid_m")]) == 0
    assert cli(["analyze", "task2vec", source_models[0], "--tasks", "digits", "digits_m", "--max-samples", "60",
                "--gains-from", str(grid), str(tmp_path / "grid_m"), "--labels-per-class", "3", "--out",
                str(tmp_path / "t")]) == 0
    t2v = json.loads((tmp_path / "t" / "task2vec.json").read_text())
    pairs = t2v["distance_vs_gain"]["pairs"]
    assert {(p["source"], p["target"]) for p in pairs} == {(s, t) for s in ("digits", "digits_m") for t in ("digits", "digits_m")}
    names = t2v["names"]
    for p in pairs:  # each pair carries the report's own distance and the grid's own gain
        assert p["distance"] == t2v["distances"][names.index(p["source"])][names.index(p["target"])]
    assert (tmp_path / "t" / "task2vec_vs_gain.png").is_file()


def test_distance_vs_gain_matches_hand_computed_ranks(tmp_path, monkeypatch):
    """Three sources for one target with gains 9, 5, 1 at distances 0.1, 0.2, 0.3: Spearman and Kendall
    are exactly -1 (closer tasks transfer better); one swapped pair gives Spearman -0.5, Kendall -1/3."""
    from transferlab.reports import task2vec

    class Source:
        def __init__(self, name):
            self.data = type("D", (), {"source": type("S", (), {"name": name, "part": "train"})()})()

    monkeypatch.setattr(task2vec, "read_run_config", lambda run: Source(run))
    report = {"names": ["a", "b", "c", "t"], "distances": [[0, 0, 0, 0.1], [0, 0, 0, 0.2], [0, 0, 0, 0.3], [0.1, 0.2, 0.3, 0]]}

    def grid(gains):
        folder = tmp_path / "-".join(map(str, gains))
        folder.mkdir()
        records = [{"method": f"{s}/supervised+finetune", "labels_per_class": 10, "gain_vs_scratch": g, "mean": 50 + g,
                    "std": 1.0, "target": "t", "pretraining": {f"{s}/supervised": [s]}} for s, g in zip("abc", gains)]
        (folder / "results.json").write_text(json.dumps(records + [{"method": "scratch", "labels_per_class": 10}]))
        return folder

    result = task2vec.distance_vs_gain(report, [grid([9, 5, 1])])
    assert result["spearman"] == pytest.approx(-1.0) and result["kendall_tau"] == pytest.approx(-1.0)
    result = task2vec.distance_vs_gain(report, [grid([5, 9, 1])])
    assert result["spearman"] == pytest.approx(-0.5) and result["kendall_tau"] == pytest.approx(-1 / 3)
    assert result["n_pairs"] == 3 and result["spearman_per_target"]["t"] == pytest.approx(-0.5)
