"""Issue #15, items 11, 14 and 17: what a new user meets in the first hour of the CLI.

Each test injects the mistake or the fault and asserts the exact outcome: one ``error:`` paragraph with exit status
2 (no traceback), or the promised behaviour. Runs are tiny (the embedded digits pair, a few steps).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import transferlab
from transferlab.cli import build_parser, main
from transferlab.config import apply_overrides
from transferlab.errors import ConfigError, DataError, TransferlabError
from transferlab.experiment import load_config, load_run, method_config, train

from conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DANN_CONFIG = CONFIGS / "digits" / "mnist_usps_dann.yaml"


def clear_error(capsys) -> str:
    """The one ``error:`` paragraph a failing command printed (and nothing else on stderr)."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def dann_run(tmp_path_factory):
    """A finished 4-step DANN run on digits -> digits_m (embedded: no files)."""
    run = tmp_path_factory.mktemp("dann") / "run"
    result = train(tiny_config("dann", iterations=4), run, progress=False)
    return run, result


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A data root with imported datasets: ``mydigits`` (the embedded digits as 8x8 grey images with class names,
    train and test), ``feats`` (feature vectors) and ``three`` (images with 3 classes)."""
    from transferlab import data as tl_data
    from transferlab.data.importers import import_dataset

    root = tmp_path_factory.mktemp("root")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for part in ("train", "test"):
        d = tl_data.load("digits", part)
        np.savez(root / f"src_{part}.npz", x=d.x.numpy(), y=d.y.numpy(), classes=np.asarray(names))
        import_dataset("arrays", root / f"src_{part}.npz", "mydigits", root=root, part=part)
    rng = np.random.default_rng(0)
    np.savez(root / "feats.npz", x=rng.normal(size=(20, 5)).astype(np.float32), y=np.arange(20) % 10)
    import_dataset("arrays", root / "feats.npz", "feats", root=root, part="test")
    np.savez(root / "three.npz", x=rng.integers(0, 255, size=(12, 8, 8), dtype=np.uint8), y=np.arange(12) % 3)
    import_dataset("arrays", root / "three.npz", "three", root=root, part="test")
    return root


@pytest.fixture(scope="module")
def own_run(own_data, tmp_path_factory):
    """A finished source-only run trained on mydigits/train and evaluated on mydigits/test."""
    run = tmp_path_factory.mktemp("own") / "run"
    config = tiny_config("source_only", iterations=4, data={
        "source": {"name": "mydigits"}, "target": None, "test": {"name": "mydigits", "part": "test"}})
    result = train(config, run, data_root=own_data, progress=False)
    return run, result


# --- item 11: grid ---------------------------------------------------------------------------------------------


def test_grid_with_a_bad_run_path_leaves_no_out_folder(tmp_path, capsys, dann_run):
    out = tmp_path / "grid"
    assert main(["grid", str(tmp_path / "no_such_run"), "--out", str(out)]) == 2
    assert "no_such_run is not a transferlab run" in clear_error(capsys)
    assert not out.exists()
    # the same with a good run first and a bad one second
    assert main(["grid", str(dann_run[0]), str(tmp_path / "typo"), "--target", "digits", "--out", str(out)]) == 2
    assert "typo is not a transferlab run" in clear_error(capsys)
    assert not out.exists()


def test_grid_failing_in_its_first_cell_removes_the_folder_it_made(tmp_path, capsys, dann_run):
    out = tmp_path / "grid"
    code = main(["grid", str(dann_run[0]), "--target", "digits", "--strategies", "scratch", "--labels-per-class", "1",
                 "--seeds", "0", "--set", "optim.lrr=0.1", "--out", str(out)])
    assert code == 2
    assert "optim.lrr: unknown key. Did you mean 'lr'?" in clear_error(capsys)
    assert not out.exists()
    kept = tmp_path / "mine"  # a folder the user already had is left alone, even when empty
    kept.mkdir()
    assert main(["grid", str(tmp_path / "no_such_run"), "--out", str(kept)]) == 2
    assert kept.is_dir()


def grid_rows(values: dict[str, list[float]]) -> list[dict]:
    return [{"label": label, "labels_per_class": 1, "seed": seed, "target_test/acc": acc, "device": "cpu"}
            for label, accs in values.items() for seed, acc in enumerate(accs)]


def test_one_seed_grid_shows_the_drop_without_flagging_negative_transfer(dann_run):
    from transferlab.protocol import grid_table, summarize_grid

    run = dann_run[0]
    records = {r["method"]: r for r in summarize_grid(grid_rows({"scratch": [52.0], "dann+finetune": [49.0]}),
                                                       [run], "cmd", target="digits")}
    finetune = records["dann+finetune"]
    assert finetune["gain_vs_scratch"] == pytest.approx(-3.0)
    assert finetune["negative_transfer"] is False  # one seed: no spread measured, nothing to exceed
    table = grid_table(list(records.values()))
    assert "49.0 ± 0.0 (-3.0)" in table and "↓ |" not in table and "0.0 ↓" not in table
    # two seeds: the drop exceeds the spread, so it is flagged
    records = {r["method"]: r for r in summarize_grid(grid_rows({"scratch": [52.0, 52.4], "dann+finetune": [49.0, 49.2]}),
                                                       [run], "cmd", target="digits")}
    assert records["dann+finetune"]["negative_transfer"] is True
    assert "49.1 ± 0.1 ↓" in grid_table(list(records.values()))


# --- item 14 (a): switching the method ---------------------------------------------------------------------------


def test_switching_the_method_drops_the_old_methods_keys_with_a_notice(capsys):
    config = load_config(DANN_CONFIG, ["method.name=source_only"])
    assert method_config(config).name == "source_only" and "trade_off" not in config.method
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trade_off" in err and "source_only" in err
    # a key given explicitly with --set is kept, and still validated against the new method
    with pytest.raises(ConfigError, match="method.trade_off: unknown key"):
        load_config(DANN_CONFIG, ["method.name=source_only", "method.trade_off=0.3"])
    # switching to a method that takes the key keeps it; no switch, no notice
    assert method_config(load_config(DANN_CONFIG, ["method.name=cdan", "method.trade_off=0.3"])).trade_off == 0.3
    load_config(DANN_CONFIG, ["method.trade_off=0.3"])
    assert capsys.readouterr().err == ""


def test_switching_the_method_from_the_cli_reaches_the_data(tmp_path, capsys):
    code = main(["train", str(DANN_CONFIG), "--set", "method.name=source_only", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("note: method.name=source_only: dropped dann's method key trade_off")
    assert "\nerror: dataset 'mnist'" in err and "trade_off: unknown key" not in err


# --- item 14 (b): deleting a key ---------------------------------------------------------------------------------


def test_set_tilde_deletes_a_key():
    config = load_config(DANN_CONFIG, ["method.trade_off=0.5", "~method.trade_off"])
    assert "trade_off" not in config.method and method_config(config).trade_off == 1.0  # the default again
    assert apply_overrides({"optim": {"lr": 0.1, "name": "sgd"}}, ["~optim.lr"]) == {"optim": {"name": "sgd"}}
    assert apply_overrides({"optim": {"lr": 0.1}}, ["~optim.lr=0.1"]) == {"optim": {}}  # Hydra's ~KEY=VALUE


@pytest.mark.parametrize("override, message", [
    ("~method.trade_of", "the config does not set method.trade_of, so there is nothing to delete. Did you mean 'trade_off'?"),
    ("~optim.nesterov", "the config does not set optim.nesterov"),
    ("~transfer.iterations", "the config does not set transfer.iterations"),
    ("~method.trade_off=2", "method.trade_off is 1.0, not 2; nothing deleted"),
    ("~optim..lr", "is not a dotted key"),
])
def test_deleting_an_unknown_key_is_a_clear_error(override, message, tmp_path, capsys):
    with pytest.raises(ConfigError) as info:
        load_config(DANN_CONFIG, [override])
    assert message in str(info.value)
    assert main(["train", str(DANN_CONFIG), "--set", override, "--out", str(tmp_path / "r")]) == 2
    assert message in clear_error(capsys)
    assert not (tmp_path / "r").exists()


# --- item 14 (c) and (d): eval needs no training data; result.json names the task and method ---------------------


def test_eval_does_not_load_the_training_split(own_data, own_run, capsys):
    run, result = own_run
    (own_data / "mydigits" / "train.npz").write_bytes(b"not an npz file")  # the training split is now corrupt
    try:
        with pytest.raises(DataError):  # the full rebuild (analysis reports) does read it ...
            load_run(run, own_data)
        assert main(["eval", str(run), "--data-root", str(own_data)]) == 0  # ... evaluation does not
        shown = json.loads(capsys.readouterr().out)
        assert shown["test"] == "mydigits/test" and shown["samples"] == 224
        assert shown["target_test/acc"] == pytest.approx(result["target_test/acc"])
        assert main(["predict", str(run), "mydigits", "--data-root", str(own_data)]) == 0
        capsys.readouterr()
        # evaluating on the corrupt split itself is one clear error
        assert main(["eval", str(run), "--on", "mydigits:train", "--data-root", str(own_data)]) == 2
        assert "mydigits" in clear_error(capsys)
    finally:
        (own_data / "mydigits" / "train.npz").unlink()


def test_result_json_names_the_task_and_the_method(dann_run, own_run):
    saved = json.loads((dann_run[0] / "result.json").read_text())
    assert saved["task"] == "digits->digits_m" and saved["method"] == "dann" and saved["test_set"] == "digits_m/test"
    assert {k: dann_run[1][k] for k in ("task", "method")} == {"task": "digits->digits_m", "method": "dann"}
    saved = json.loads((own_run[0] / "result.json").read_text())
    assert saved["task"] == "mydigits" and saved["method"] == "source_only"


# --- item 14 (e), (f), (g) ---------------------------------------------------------------------------------------


def test_download_of_a_misspelt_dataset_suggests_the_name(tmp_path, capsys):
    assert main(["datasets", "download", "mnsit", "--data-root", str(tmp_path)]) == 2
    err = clear_error(capsys)
    assert "Did you mean 'mnist'?" in err and "Downloadable: " in err and "usps" in err
    assert main(["datasets", "download", "digits", "--data-root", str(tmp_path)]) == 2
    assert "embedded in the package and needs no download" in clear_error(capsys)
    assert not any(tmp_path.iterdir())


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"transferlab {transferlab.__version__}\n"


def test_top_level_help_lists_every_analyze_kind():
    from transferlab.reports import ANALYZE

    text = " ".join(build_parser().format_help().split())
    assert len(ANALYZE) >= 8
    assert f"diagnostics of saved runs: {', '.join(c.name for c in ANALYZE)} (JSON + PNG)" in text


# --- item 14 (h): an offline timm backbone fails fast ------------------------------------------------------------


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


def test_offline_timm_backbone_fails_fast(empty_weight_caches, monkeypatch):
    import timm  # noqa: F401  (its import time is not what is measured)

    from transferlab.models import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(TransferlabError, match="needs its weights from the Hugging Face hub, but HF_HUB_OFFLINE is set "
                                               "and they are not in the local cache"):
        create_backbone("timm:resnet18", pretrained=True)
    assert time.perf_counter() - started < 5.0


def test_unreachable_hub_fails_fast_without_the_env_variable(empty_weight_caches, monkeypatch):
    import timm  # noqa: F401
    from huggingface_hub import constants

    from transferlab.models import backbones

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    started = time.perf_counter()
    with pytest.raises(TransferlabError, match=r"127.0.0.1 cannot be reached"):
        backbones.create_backbone("timm:resnet18", pretrained=True)
    assert time.perf_counter() - started < 5.0


def test_offline_timm_backbone_loads_cached_weights(empty_weight_caches, monkeypatch):
    import timm
    from safetensors.torch import save_file

    from transferlab.models import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = empty_weight_caches / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(1)
    reference = timm.create_model("resnet18")
    save_file(reference.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    model = create_backbone("timm:resnet18", pretrained=True)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


# --- item 17: predict, eval --on, methods NAME -------------------------------------------------------------------


def test_predict_writes_probabilities_as_csv_and_jsonl(own_data, own_run, tmp_path, capsys):
    from transferlab import data as tl_data

    run = own_run[0]
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "mydigits:test", "--out", str(out), "--data-root", str(own_data)]) == 0
    assert "224 samples of mydigits/test (10 classes)" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert len(rows) == 224 and list(rows[0]) == ["index", "predicted"] + [f"p_{n}" for n in names]
    for i, row in enumerate(rows):
        p = [float(row[f"p_{n}"]) for n in names]
        assert int(row["index"]) == i and sum(p) == pytest.approx(1.0, abs=1e-4)
        assert p[names.index(row["predicted"])] == max(p)  # (printed to 6 digits: near-ties may print equal)
    # the predictions agree with the accuracy eval reports
    y = tl_data.load("mydigits", "test", own_data).y.numpy()
    accuracy = 100.0 * np.mean([names.index(r["predicted"]) == t for r, t in zip(rows, y)])
    assert accuracy == pytest.approx(own_run[1]["target_test/acc"])

    out = tmp_path / "p.jsonl"
    assert main(["predict", str(run), "mydigits", "--out", str(out), "--data-root", str(own_data)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 224 and lines[5]["index"] == 5 and lines[5]["predicted"] == rows[5]["predicted"]
    assert sorted(lines[5]["probabilities"]) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.jsonl"]  # no temporary file left


def test_predict_without_labels_or_names_and_on_another_label_space(own_data, dann_run, tmp_path, capsys):
    run = dann_run[0]
    assert main(["predict", str(run), "digits_m"]) == 0  # CSV on standard output, class indices
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "index,predicted," + ",".join(f"p_{k}" for k in range(10)) and len(lines) == 1 + 225
    out = tmp_path / "three.jsonl"
    assert main(["predict", str(run), "three", "--out", str(out), "--data-root", str(own_data)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert isinstance(first["predicted"], int) and len(first["probabilities"]) == 10  # the model's classes


def test_a_failed_predict_leaves_the_existing_file_alone(dann_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("keep me\n")
    assert main(["predict", str(dann_run[0]), "digitz", "--out", str(out)]) == 2
    assert "Did you mean 'digits'?" in clear_error(capsys)
    assert main(["predict", str(dann_run[0]), "digits", "--out", str(tmp_path / "p.txt")]) == 2
    assert "must end in .csv or .jsonl" in clear_error(capsys)
    assert out.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_eval_on_another_labelled_set(dann_run, own_data, capsys):
    run, result = dann_run
    assert main(["eval", str(run), "--on", "digits_m"]) == 0  # default part: test, the run's own test set
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(result["target_test/acc"])
    assert main(["eval", str(run), "--on", "digits:train"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["test"] == "digits/train" and shown["samples"] == 674 and 0 <= shown["acc"] <= 100
    for target, message in (("digits:tset", "has no part 'tset'. Did you mean 'test'?"),
                            ("feats", "feats holds features data, but the run's model takes image input"),
                            ("three", "three/test has 3 classes, but the run's model predicts 10")):
        assert main(["eval", str(run), "--on", target, "--data-root", str(own_data)]) == 2
        assert message in clear_error(capsys)


def test_eval_of_a_pretraining_run_is_a_clear_error(tmp_path, capsys):
    config = tiny_config("autoencoder", iterations=2)
    config = config.model_copy(update={"data": config.data.model_copy(update={"target": None})})
    train(config, tmp_path / "ae", progress=False)
    for argv in (["eval", str(tmp_path / "ae")], ["predict", str(tmp_path / "ae"), "digits"]):
        assert main(argv) == 2
        assert "is a pretraining run (autoencoder) with nothing to classify" in clear_error(capsys)


def test_methods_name_explains_each_hyper_parameter(capsys):
    assert main(["methods", "dann"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dann: DANN — Ganin & Lempitsky")
    assert "  trade_off: float ≥ 0 = 1.0\n      Weight of the domain-adversarial loss." in out
    assert "  grl_schedule: ramp | constant = 'ramp'\n" in out
    assert "  discriminator_hidden: int > 0 | list[int > 0] = 1024\n" in out
    assert "bn_mode: joint | separate = 'joint'\n      How BatchNorm sees the two domains" in out  # inherited field
    assert main(["methods", "denoising_autoencoder"]) == 0  # fields documented in the parent's Config
    assert "noise: none | mask | gaussian = 'mask'\n" in capsys.readouterr().out
    assert main(["methods", "dan"]) == 2
    assert "unknown method 'dan'. Did you mean 'dann'?" in clear_error(capsys)


def test_an_mlp_on_images_is_a_clear_error(tmp_path, capsys):
    from transferlab.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("data: {source: {name: digits}, target: {name: digits_m}, image_size: 16, channels: 3}\n"
                      "model: {backbone: mlp}\nmethod: {name: source_only}\ntrain: {iterations: 2}\n")
    assert main(["train", str(config)]) == 2
    assert "backbone 'mlp' takes feature vectors" in capsys.readouterr().err
