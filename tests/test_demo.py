"""``transferlab demo``: it runs the packaged config (its adaptation method, its iterations, everything else), and
writes the table and the t-SNE picture next to what it prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import transferlab.demo as demo
from transferlab.cli import main
from transferlab.experiment import load_config, resolved_config

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "demo" / "results.json"
PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_writes_the_table_and_the_tsne_picture_and_prints_both_methods(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--set", "train.iterations=4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    adapted = demo.adaptation_method()
    summary = json.loads((out / "results.json").read_text())
    assert summary["adaptation"] == adapted and summary["seeds"] == [0] and summary["iterations"] == 4
    for method in ("source_only", adapted):
        # printed, per seed and in the table, with the accuracy results.json holds
        accuracy = f"{summary['accuracy'][method][0]:.1f}"
        assert re.search(rf"seed 0\s+{method}\s+target accuracy {re.escape(accuracy)}%", printed)
        assert re.search(rf"^{method}\s+{re.escape(accuracy)}\s", printed, re.MULTILINE)
        assert (out / "runs" / f"{method}-seed0" / "model.safetensors").is_file()
    gain = summary["accuracy"][adapted][0] - summary["accuracy"]["source_only"][0]
    assert summary["gain"] == [pytest.approx(gain)]
    assert f"{adapted} vs source-only on the target: {gain:+.1f} points" in printed

    table = (out / "results.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ")}
    assert rows["method"][0] == "seed 0"
    for method in ("source_only", adapted):
        assert rows[method][0] == f"{summary['accuracy'][method][0]:.1f}"
    assert rows[f"gain ({adapted} − source-only)"][0] == f"{gain:+.1f}"
    assert "![t-SNE before and after adaptation](tsne.png)" in table

    # the picture: the source-only model's t-SNE (before) above the adapted model's (after)
    from matplotlib.pyplot import imread

    before, after = out / "tsne_source_only.png", out / f"tsne_{adapted}.png"
    for picture in (out / "tsne.png", before, after):
        assert picture.read_bytes()[:8] == PNG
    both, top, bottom = imread(out / "tsne.png"), imread(before), imread(after)
    assert top.shape[0] + bottom.shape[0] <= both.shape[0] <= top.shape[0] + bottom.shape[0] + 100  # + a label each
    assert both.shape[1] == max(top.shape[1], bottom.shape[1])
    assert f"t-SNE before/after adaptation: {out / 'tsne.png'}" in printed

    # a second demo into the same folder replaces its own runs; --seeds 2 adds a column and the mean
    assert main(["demo", "--out", str(out), "--set", "train.iterations=2", "--seeds", "2", "--no-tsne",
                 "--no-progress"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["accuracy"][adapted]) == 2 and summary["iterations"] == 2
    assert json.loads((out / "runs" / f"{adapted}-seed0" / "config.json").read_text())["train"]["iterations"] == 2
    header = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| method"))
    assert "seed 0 | seed 1 | mean ± std" in header
    assert not (out / "tsne.png").exists()  # an earlier run's picture does not sit next to this table


def _recording_train(monkeypatch):
    calls = []

    def fake_train(config, out_dir, **_):
        calls.append(config)
        return {"target_test/acc": 50.0 + len(calls), "train_seconds": 1.0, "task": "digits->digits_m",
                "test_set": "digits_m/test", "device": "cpu"}

    monkeypatch.setattr(demo, "train", fake_train)
    return calls


def test_the_demo_runs_the_packaged_config(tmp_path, monkeypatch):
    calls = _recording_train(monkeypatch)
    assert main(["demo", "--out", str(tmp_path), "--no-tsne", "--no-progress"]) == 0
    packaged = load_config(demo.EMBEDDED_CONFIG)
    raw = yaml.safe_load(demo.EMBEDDED_CONFIG.read_text())
    baseline, adapted = calls
    # the adaptation run is the packaged config itself (method, iterations and every other setting) at seed 0
    assert adapted.model_dump() == packaged.model_dump() and adapted.method["name"] == raw["method"]["name"] != "source_only"
    assert adapted.train.iterations == raw["train"]["iterations"]
    # the baseline differs only in its method: source_only, with the settings every method has (bn_mode)
    assert baseline.method == {"name": "source_only", "bn_mode": raw["method"]["bn_mode"]}
    assert baseline.model_dump(exclude={"method"}) == packaged.model_dump(exclude={"method"})


def test_the_demo_takes_method_and_iterations_from_the_config_file(tmp_path, monkeypatch):
    """Another packaged config (CDAN with its own trade-off, 7 iterations) is what the demo then runs: nothing
    about the method or the length is fixed in the demo's code, and the baseline drops CDAN's own keys."""
    config = tmp_path / "embedded.yaml"
    raw = yaml.safe_load(demo.EMBEDDED_CONFIG.read_text())
    raw["method"] = {"name": "cdan", "bn_mode": "joint", "trade_off": 0.3}
    raw["train"]["iterations"] = 7
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(demo, "EMBEDDED_CONFIG", config)
    calls = _recording_train(monkeypatch)
    assert main(["demo", "--out", str(tmp_path / "out"), "--no-tsne", "--no-progress", "--seeds", "2"]) == 0
    assert [(c.method["name"], c.seed, c.train.iterations) for c in calls] == [
        ("source_only", 0, 7), ("cdan", 0, 7), ("source_only", 1, 7), ("cdan", 1, 7)]
    assert calls[0].method == {"name": "source_only", "bn_mode": "joint"} and calls[1].method["trade_off"] == 0.3
    assert json.loads((tmp_path / "out" / "results.json").read_text())["adaptation"] == "cdan"


def test_the_benchmarked_config_is_the_packaged_one():
    """benchmarks/demo/results.json (the README's demo table) was measured with the config the package ships."""
    records = json.loads(BENCHMARK.read_text())
    final = [r for r in records if r.get("protocol") == "final" and r["metric"] in ("target_test/acc", "gain")]
    adapted = demo.adaptation_method()
    assert {r["method"] for r in final if r["metric"] == "target_test/acc"} == {"source_only", adapted}
    from transferlab.data.embedded import PHOTO_SCALE

    for record in final:
        assert record["photo_scale"] == PHOTO_SCALE, "digits_m's recipe changed since the benchmark measured it"
        method = record["method"] if record["metric"] == "target_test/acc" else adapted
        expected = resolved_config(demo.demo_config(method, seed=0))
        # Settings added to the schema since the measurement take their defaults, which keep the measured behaviour
        # (e.g. model.layer_lr_decay 1, data.eval []); every recorded value must still be the packaged one.
        recorded = resolved_config(load_config(raw=record["config"]))
        assert recorded == expected, (
            f"{record['method']}: the packaged config changed since benchmarks/demo/run.py measured it; run it again")


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "needs at least one seed"),
    (["--set", "method.name=source_only"], "compares an adaptation method with source_only"),
])
def test_a_demo_without_seeds_or_adaptation_is_refused_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err and not out.exists()
