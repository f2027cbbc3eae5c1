"""Experiment trackers (issue #15, item 15): every record of metrics.jsonl also goes to TensorBoard through
Accelerate's tracker, and a tracker whose package is missing is a clear error before training."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_config
from transferlab.errors import TransferlabError
from transferlab.experiment import build


def test_tensorboard_receives_every_logged_value(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config("dann", iterations=8, train={"log_every": 2, "eval_every": 4, "trackers": ["tensorboard"]})
    trainer = build(config).trainer(tmp_path / "run", progress=False)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    for kind, key, tag in (("train", "cls_loss", "train/cls_loss"), ("train", "grl_lambda", "train/grl_lambda"),
                           ("train", "lr", "lr"), ("eval", "target_test/acc", "eval/target_test/acc")):
        logged = [(r["step"], r[key]) for r in records if r["kind"] == kind]
        assert logged, key
        assert [(e.step, pytest.approx(e.value, rel=1e-5)) for e in events.Scalars(tag)] == logged


def test_a_tracker_without_its_package_is_refused(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    trainer = build(tiny_config("dann", iterations=2, train={"trackers": ["mlflow"]})).trainer(tmp_path / "run",
                                                                                            progress=False)
    with pytest.raises(TransferlabError, match="pip install mlflow"):
        trainer.fit()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
