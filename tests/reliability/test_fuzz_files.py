"""Malformed files, generated (issue #15): whatever a data file or a checkpoint holds, loading it gives a dataset (or a
resumed run) or the library's own error with a message, never another exception (a traceback for the user)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import tiny_config
from transferlab import data as tl_data
from transferlab.errors import TransferlabError
from transferlab.experiment import build, resolved_config

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])

dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_, "U3"])
arrays = hnp.arrays(dtype=dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))


def _dataset(root: Path, kind: str, fmt: str, parts: list[str] = ("p",), **meta) -> Path:
    folder = root / "fz"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"kind": kind, "format": fmt, "num_classes": 3,
                                                     "parts": list(parts), **meta}))
    return folder


def _load_everything(root: Path) -> None:
    """Load part ``p`` and, when it loads, gather every row as a batch: either may refuse, neither may crash."""
    try:
        dataset = tl_data.load("fz", "p", root)
    except TransferlabError as exc:
        assert str(exc)
        return
    if len(dataset):
        try:
            dataset.batch(torch.arange(len(dataset)))
        except TransferlabError:
            pass  # raw text is refused until tokenised


@FAST
@given(st.dictionaries(st.sampled_from(["x", "y", "classes", "names"]), arrays, max_size=4),
       st.sampled_from(["image", "features"]))
def test_any_npz_loads_or_is_refused_with_a_message(tmp_path_factory, contents, kind):
    root = tmp_path_factory.mktemp("npz")
    folder = _dataset(root, kind, "npz")
    np.savez(folder / "p.npz", **contents)
    _load_everything(root)


@FAST
@given(st.dictionaries(st.sampled_from(["audio", "offsets", "lengths", "sample_rate", "y", "speaker"]), arrays,
                       max_size=6))
def test_any_audio_npz_loads_or_is_refused_with_a_message(tmp_path_factory, contents):
    root = tmp_path_factory.mktemp("audio")
    folder = _dataset(root, "audio", "audio")
    np.savez(folder / "p.npz", **contents)
    _load_everything(root)


@FAST
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
                                   max_size=4), max_size=6).map(
                     lambda rows: "\n".join("\t".join(r) for r in rows).encode("utf-8")),
                 st.lists(st.tuples(st.integers(-2, 5), st.text(max_size=10)), max_size=5).map(
                     lambda rows: ("label\ttext\n" + "".join(f"{y}\t{t}\n" for y, t in rows)).encode("utf-8"))))
def test_any_text_file_loads_or_is_refused_with_a_message(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("tsv")
    folder = _dataset(root, "text", "tsv")
    (folder / "p.tsv").write_bytes(content)
    _load_everything(root)


@FAST
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.tuples(st.sampled_from(["-1", "1", "+1", "0", "x", "2.5"]),
                                    st.lists(st.tuples(st.integers(-1, 12), st.floats(allow_nan=True,
                                                                                      allow_infinity=True)),
                                             max_size=4)), max_size=5).map(
                     lambda rows: "".join(f"{y} " + " ".join(f"{i}:{v}" for i, v in feats) + "\n"
                                          for y, feats in rows).encode())),
       st.booleans(), st.sampled_from([True, False, "auto"]))
def test_any_svmlight_file_loads_or_is_refused_with_a_message(tmp_path_factory, content, compress, zero_based):
    import gzip

    root = tmp_path_factory.mktemp("svm")
    folder = _dataset(root, "features", "svmlight", options={"n_features": 10, "zero_based": zero_based,
                                                             "label_values": [-1, 1]})
    (folder / "p.svmlight.gz").write_bytes(gzip.compress(content) if compress else content)
    _load_everything(root)


@FAST
@given(st.binary(max_size=400))
def test_any_manifest_is_read_or_refused_with_a_message(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("manifest")
    (root / "fz").mkdir()
    (root / "fz" / "dataset.json").write_bytes(content)
    _load_everything(root)


@pytest.fixture(scope="module")
def finished_checkpoint(tmp_path_factory):
    """A tiny run stopped at step 4 with a checkpoint (what the fuzzed copies start from)."""
    folder = tmp_path_factory.mktemp("ckpt") / "run"
    config = tiny_config("dann", iterations=8, train={"checkpoint_every": 4, "log_every": 4})
    trainer = build(config).trainer(folder, progress=False)
    trainer.prepare_run(resolved_config(config), resume=False, overwrite=False)
    trainer.fit(stop_at=4)
    return folder, config


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_damaged_checkpoint_resumes_or_is_refused_with_a_message(tmp_path_factory, finished_checkpoint, data):
    source, config = finished_checkpoint
    run = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(source, run)
    files = sorted(p for p in (run / "checkpoints").rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    content = target.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "replace", "empty"]))
    if how == "truncate":
        content = content[: data.draw(st.integers(0, max(len(content) - 1, 0)))]
    elif how == "flip" and content:
        at = data.draw(st.integers(0, len(content) - 1))
        content = content[:at] + bytes([content[at] ^ (1 << data.draw(st.integers(0, 7)))]) + content[at + 1:]
    elif how == "replace":
        content = data.draw(st.binary(max_size=200))
    else:
        content = b""
    target.write_bytes(content)
    trainer = build(config).trainer(run, progress=False, resume=True)
    try:
        trainer.prepare_run(resolved_config(config), resume=True, overwrite=False)
        result = trainer.fit()
    except TransferlabError as exc:
        assert str(exc)
        return
    assert result["step"] == 8  # resumed (an intact checkpoint, or the damage left the content equal)
