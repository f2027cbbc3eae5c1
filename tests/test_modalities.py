"""Text, audio and sparse features through the one engine (issue #14): tiny Hugging Face encoders built from configs,
a tokenizer trained here, token cache, length buckets, resumable variable-length streams, sparse data kept sparse."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_tiny import tiny_bert, tiny_wav2vec2, toy_sentences, write_toy_audio, write_toy_text
from transferlab import data as tl_data
from transferlab.data import Batch, SampleStream, concat_inputs
from transferlab.data.samples import Ragged, SequenceDataset
from transferlab.data.streams import bucketed_batches
from transferlab.errors import ConfigError, DataError, TransferlabError
from transferlab.experiment import build, load_config, resolved_config, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(os.environ.get("TRANSFERLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    texts = [t for lang in ("en", "es") for _, t in toy_sentences(lang, 200, 1)]
    return {"bert": tiny_bert(base / "bert", texts), "w2v": tiny_wav2vec2(base / "w2v")}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    write_toy_text(tmp_path / "data")
    write_toy_audio(tmp_path / "data")
    return tmp_path / "data"


def text_config(root: Path, bert: Path, method: str = "dann", iterations: int = 60, **extra) -> dict:
    raw = {
        "seed": 0,
        "data": {"root": str(root), "source": {"name": "toytext", "part": "en_train"},
                 "target": {"name": "toytext", "part": "es_train"}, "batch_size": 16},
        "model": {"backbone": f"hf:{bert}", "bottleneck_dim": 0},
        "method": {"name": method},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": iterations, "eval_every": 0, "log_every": 10, "checkpoint_every": 0},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        raw[section][name] = value
    return raw


def losses(run: Path, key: str = "cls_loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["source_only", "dann"])
def test_text_runs_end_to_end_and_the_loss_falls(root, hf_models, tmp_path, method):
    raw = text_config(root, hf_models["bert"], method, iterations=60 if method == "source_only" else 80)
    if method == "dann":
        raw["method"]["trade_off"], raw["optim"]["lr"] = 0.3, 2e-3
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    curve = losses(tmp_path / "run")
    assert curve[-1] < 0.5 * curve[0], curve
    assert result["test_set"] == "toytext/es_test"  # a <lang>_train target is evaluated on <lang>_test
    assert result["target_test/acc"] > 60.0  # two balanced classes: chance is 50
    if method == "dann":
        assert "transfer_loss" in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])


def test_audio_source_only_runs_and_the_loss_falls(root, hf_models, tmp_path):
    raw = {
        "data": {"root": str(root), "source": {"name": "toyaudio", "part": "train"},
                 "test": {"name": "toyaudio", "part": "test"}, "batch_size": 8, "audio": {"sample_rate": 8000}},
        "model": {"backbone": f"hf:{hf_models['w2v']}", "bottleneck_dim": 0},
        "method": {"name": "source_only"},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": 40, "eval_every": 0, "log_every": 10, "checkpoint_every": 0},
    }
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    curve = losses(tmp_path / "run")
    assert curve[-1] < 0.5 * curve[0], curve
    assert result["target_test/acc"] > 75.0


def test_text_run_resumes_to_the_uninterrupted_weights(root, hf_models, tmp_path):
    from transferlab.experiment import build as build_experiment

    config = load_config(raw=text_config(root, hf_models["bert"], "dann", iterations=12,
                                         train__checkpoint_every=6, train__deterministic=True))
    whole = train(config, tmp_path / "whole", progress=False)
    experiment = build_experiment(config)
    trainer = experiment.trainer(tmp_path / "cut", progress=False)
    trainer.prepare_run(resolved_config(config), resume=False, overwrite=False)
    trainer.fit(stop_at=6)
    resumed = train(config, tmp_path / "cut", progress=False, resume=True)
    assert resumed["resumed_from_step"] == 6
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    assert resumed["target_test/acc"] == whole["target_test/acc"]


# --- streams --------------------------------------------------------------------------------------------------


def _sequence_set(lengths: list[int]) -> SequenceDataset:
    rows = [np.full(n, i + 1, dtype=np.int64) for i, n in enumerate(lengths)]
    return SequenceDataset(y=torch.arange(len(rows)) % 3, name="toy", part="train", num_classes=3, classes=None,
                           extras={}, data=Ragged.from_rows(rows, torch.long), kind="text", input_key="input_ids")


@pytest.mark.parametrize("bucket", [False, True])
def test_a_resumed_sequence_stream_draws_the_batches_of_an_uninterrupted_one(bucket):
    dataset = _sequence_set([int(n) for n in np.random.default_rng(0).integers(1, 40, size=37)])
    whole = SampleStream(dataset, 5, seed=3, bucket=bucket)
    expected = [next(whole) for _ in range(20)]  # crosses epoch boundaries (7 batches per epoch)
    first = SampleStream(dataset, 5, seed=3, bucket=bucket)
    for _ in range(9):
        next(first)
    again = SampleStream(dataset, 5, seed=3, bucket=bucket)
    again.load_state_dict(first.state_dict())
    for want in expected[9:]:
        got = next(again)
        assert torch.equal(got.x["input_ids"], want.x["input_ids"]) and torch.equal(got.y, want.y)


def test_bucketed_batches_hold_every_sample_once_per_epoch_and_pad_less():
    lengths = torch.tensor(np.random.default_rng(1).integers(1, 200, size=400))
    for epoch in range(3):
        batches = bucketed_batches(lengths, 8, seed=5, epoch=epoch, window=10)
        seen = torch.cat(batches)
        assert len(batches) == 50 and sorted(seen.tolist()) == list(range(400))
    bucketed = sum(int(lengths[b].max()) * len(b) for b in bucketed_batches(lengths, 8, seed=5, epoch=0, window=10))
    order = tl_data.streams.epoch_permutation(400, 5, 0)
    plain = sum(int(lengths[order[i:i + 8]].max()) * 8 for i in range(0, 400, 8))
    assert bucketed < 0.7 * plain  # similar lengths together: far less padding
    assert [b.tolist() for b in bucketed_batches(lengths, 8, 5, 1)] != [b.tolist() for b in bucketed_batches(lengths, 8, 5, 0)]


def test_padding_masks_and_concat_of_different_lengths():
    dataset = _sequence_set([3, 1, 5])
    inputs = dataset.batch(torch.tensor([0, 1]))
    assert inputs["input_ids"].tolist() == [[1, 1, 1], [2, 0, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    joined = concat_inputs(inputs, dataset.batch(torch.tensor([2])))
    assert joined["input_ids"].tolist() == [[1, 1, 1, 0, 0], [2, 0, 0, 0, 0], [3, 3, 3, 3, 3]]
    assert joined["attention_mask"].sum(1).tolist() == [3, 1, 5]
    both = Batch.concat(Batch(inputs, torch.tensor([0, 1])), Batch(dataset.batch(torch.tensor([2])), torch.tensor([2])))
    first, rest = both.split(2)
    assert rest.y.tolist() == [2] and first.x["input_ids"].shape == (2, 5) and len(both) == 3


# --- text preparation -------------------------------------------------------------------------------------------


def test_token_cache_is_hit_on_the_second_run_and_invalidated_by_tokenizer_or_data(root, hf_models, tmp_path):
    from transferlab.data.modality import Text
    from hf_tiny import train_tokenizer

    dataset = tl_data.load("toytext", "en_train", root)
    tokenizer = tl_data.load_tokenizer(str(hf_models["bert"]))
    text = Text(tokenizer, max_length=32)
    first = text.prepare(dataset)
    assert text.last_cache_hit is False
    second = Text(tl_data.load_tokenizer(str(hf_models["bert"])), max_length=32)
    again = second.prepare(dataset)
    assert second.last_cache_hit is True
    assert torch.equal(again.data.values, first.data.values) and torch.equal(again.lengths, first.lengths)
    other = Text(train_tokenizer(["completely different words here"] * 5), max_length=32)
    other.prepare(dataset)
    assert other.last_cache_hit is False  # another tokenizer
    shorter = Text(tokenizer, max_length=4)
    assert shorter.prepare(dataset).lengths.max() == 4 and shorter.last_cache_hit is False  # another max_length
    changed = dataset.subset(torch.arange(len(dataset)))
    changed.texts[0] = changed.texts[0] + " plot"
    text.prepare(changed)
    assert text.last_cache_hit is False  # other data
    ids = tokenizer(dataset.texts[0])["input_ids"]
    assert first.data.row(0).tolist() == ids


def test_language_tags_and_tsv_errors(root, tmp_path):
    dataset = tl_data.load("toytext", "es_test", root)
    assert set(dataset.languages) == {"es"} and dataset.classes == ["positive", "negative"]
    bad = root / "toytext" / "en_test.tsv"
    bad.write_text("label\ttext\tlanguage\n0\tgood film\ten\n7\tbad\ten\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: label 7 outside 0..1"):
        tl_data.load("toytext", "en_test", root)
    bad.write_text("label\ttext\tlanguage\n0\t \ten\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: empty text"):
        tl_data.load("toytext", "en_test", root)


def test_text_without_a_tokenizer_or_sequence_encoder_is_refused(root, hf_models):
    raw = text_config(root, hf_models["bert"])
    raw["model"]["backbone"] = "mlp"
    with pytest.raises(ConfigError, match="data.text.tokenizer"):
        build(load_config(raw=raw))
    raw["data"]["text"] = {"tokenizer": str(hf_models["bert"])}
    with pytest.raises(ConfigError, match="model.backbone: hf:"):
        build(load_config(raw=raw))


def test_hf_encoder_pooling_ignores_padding_and_freezing_follows_the_config(root, hf_models):
    raw = text_config(root, hf_models["bert"], "source_only")
    raw["model"]["hf"] = {"freeze_embeddings": True, "freeze_layers": 1, "pooling": "mean"}
    experiment = build(load_config(raw=raw))
    model = experiment.method.encoder.backbone.model
    assert not any(p.requires_grad for p in model.embeddings.parameters())
    assert not any(p.requires_grad for p in model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.encoder.layer[1].parameters())
    encoder = experiment.method.encoder.eval()
    source = experiment.source
    short = int(torch.argmin(source.lengths))
    long = int(torch.argmax(source.lengths))
    with torch.no_grad():
        alone = encoder(source.batch(torch.tensor([short])))
        padded = encoder(source.batch(torch.tensor([short, long])))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)
    raw["model"]["hf"] = {"pooling": "cls"}
    cls = build(load_config(raw=raw)).method.encoder.eval()
    with torch.no_grad():
        hidden = cls.backbone.model(**source.batch(torch.tensor([short]))).last_hidden_state
        assert torch.allclose(cls(source.batch(torch.tensor([short]))), hidden[:, 0], atol=1e-6)


def test_cuda_graphs_refuse_variable_shapes(root, hf_models):
    raw = text_config(root, hf_models["bert"], "source_only", train__cuda_graph=True)
    experiment = build(load_config(raw=raw))
    with pytest.raises(TransferlabError, match="fixed shape"):
        experiment.trainer(None, progress=False, _emulate_graphs=True)


# --- audio preparation ------------------------------------------------------------------------------------------


def test_audio_is_resampled_normalised_and_cut(root):
    from transferlab.data.modality import Audio

    raw = tl_data.load("toyaudio", "train", root)
    assert raw.sample_rate == 8000 and raw.data.values.abs().max() <= 1.0
    prepared = Audio(sample_rate=16000, normalize=True, max_seconds=0.3).prepare(raw)
    assert prepared.sample_rate == 16000
    assert int(prepared.lengths.max()) == int(0.3 * 16000)
    short = int(torch.argmin(raw.lengths))
    assert int(prepared.lengths[short]) == min(2 * int(raw.lengths[short]), 4800)
    row = prepared.data.row(short)
    assert abs(float(row.mean())) < 1e-3 and abs(float(row.std()) - 1.0) < 1e-2
    assert list(raw.extras["speaker"][:3]) == ["s0", "s1", "s2"]


@pytest.mark.data
def test_fsdd_audio_loads_by_name():
    if not (DATA / "fsdd").is_dir():
        pytest.skip(f"the prepared data root {DATA} has no fsdd")
    dataset = tl_data.load("fsdd", "test", DATA)
    assert len(dataset) == 300 and dataset.sample_rate == 8000 and dataset.num_classes == 10
    batch = dataset.batch(torch.tensor([0, 1]))
    assert batch["input_values"].dtype == torch.float32 and batch["attention_mask"].sum(1).tolist() == \
        dataset.lengths[:2].tolist()
    speech = tl_data.load("speechocean762", "test", DATA)
    assert speech.classes == ["adult", "child"] and int(speech.y.sum()) == 104  # is_child


# --- sparse features --------------------------------------------------------------------------------------------


def _write_svmlight(folder: Path, zero_based: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first = 0 if zero_based else 1
    lines = [f"{'+1' if i % 2 else '-1'} {first}:{i + 1} {first + 3}:2 {first + 9}:0.5" for i in range(6)]
    with gzip.open(folder / "a_train.svmlight.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    (folder / "dataset.json").write_text(json.dumps({
        "kind": "features", "format": "svmlight", "num_classes": 2, "parts": ["a_train"],
        "options": {"n_features": 10, "zero_based": zero_based, "label_values": [-1, 1]}}))


@pytest.mark.parametrize("zero_based", [True, False])
def test_gzip_svmlight_loads_zero_or_one_based_and_stays_sparse_until_the_batch(tmp_path, zero_based):
    import scipy.sparse

    _write_svmlight(tmp_path / "sv", zero_based)
    dataset = tl_data.load("sv", "a_train", tmp_path)
    assert scipy.sparse.issparse(dataset.x) and dataset.x.shape == (6, 10) and dataset.x.nnz == 18
    assert dataset.y.tolist() == [0, 1, 0, 1, 0, 1]
    stream = SampleStream(dataset, 3, seed=0)
    batch = next(stream)
    assert scipy.sparse.issparse(stream.dataset.x)  # the stream keeps the matrix sparse
    index = tl_data.streams.epoch_permutation(6, 0, 0)[:3]
    expected = dataset.x[index.numpy()].toarray()
    assert batch.x.dtype == torch.float32 and np.array_equal(batch.x.numpy(), expected)
    assert expected[:, 0].tolist() == (index + 1).tolist() and expected[0, 9] == 0.5


def test_an_index_past_the_features_is_a_clear_error(tmp_path):
    _write_svmlight(tmp_path / "sv", zero_based=False)
    meta = json.loads((tmp_path / "sv" / "dataset.json").read_text())
    meta["options"]["n_features"] = 5
    (tmp_path / "sv" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="a_train.svmlight.gz"):
        tl_data.load("sv", "a_train", tmp_path)


def test_feature_normalisation_per_domain(tmp_path):
    from transferlab.data.modality import Features

    _write_svmlight(tmp_path / "sv", zero_based=True)
    sparse = tl_data.load("sv", "a_train", tmp_path)
    l1 = Features("l1").prepare(sparse)
    assert np.allclose(np.asarray(l1.x.sum(axis=1)).ravel(), 1.0)
    z = Features("zscore").prepare(sparse)
    dense = z.batch(torch.arange(6)).numpy()
    assert np.allclose(dense.mean(0), 0.0, atol=1e-5)
    assert np.allclose(dense[:, 0].std(), 1.0, atol=1e-4) and np.allclose(dense[:, 1], 0.0)  # constant column stays 0
    array = tl_data.ArrayDataset(torch.randn(50, 4) * 5 + 3, torch.zeros(50, dtype=torch.long), "d", "p", 2)
    standard = Features("zscore").prepare(array).x
    assert torch.allclose(standard.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(standard.std(0, unbiased=False), torch.ones(4), atol=1e-4)


@pytest.mark.data
def test_amazon_reviews_dann_runs_on_sparse_features(tmp_path):
    if not (DATA / "amazon_reviews").is_dir():
        pytest.skip(f"the prepared data root {DATA} has no amazon_reviews")
    raw = {
        "data": {"root": str(DATA), "source": {"name": "amazon_reviews", "part": "books_train"},
                 "target": {"name": "amazon_reviews", "part": "kitchen_train"}, "batch_size": 32,
                 "features": {"normalize": "zscore"}},
        "model": {"backbone": "mlp", "mlp": {"hidden": [64], "activation": "sigmoid"}, "bottleneck_dim": 0},
        "method": {"name": "dann", "discriminator_hidden": [], "grl_schedule": "constant", "grl_max": 0.1},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": 60, "eval_every": 0, "log_every": 20, "checkpoint_every": 0},
    }
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["test_set"] == "amazon_reviews/kitchen_test"
    assert result["target_test/acc"] > 60.0  # two balanced classes: chance is 50


@pytest.mark.parametrize("method", ["source_only", "dann", "cdan", "cdan_e", "mcd", "adda", "supervised",
                                    "linear_probe"])
@pytest.mark.parametrize("kind", ["text", "audio"])
def test_every_classification_method_trains_on_text_and_audio(root, hf_models, tmp_path, method, kind):
    raw = text_config(root, hf_models["bert"], method, iterations=4)
    raw["data"]["batch_size"] = 8
    if kind == "audio":
        raw["data"].update(source={"name": "toyaudio", "part": "train"}, target={"name": "toyaudio", "part": "test"},
                           audio={"sample_rate": 8000})
        raw["model"]["backbone"] = f"hf:{hf_models['w2v']}"
    if method == "adda":
        raw["method"]["pretrain_fraction"] = 0.5  # both stages run
    if method in ("supervised", "linear_probe"):
        del raw["data"]["target"]
        raw["data"]["test"] = {"name": "toytext", "part": "en_test"} if kind == "text" else {"name": "toyaudio",
                                                                                           "part": "test"}
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["step"] == 4 and 0.0 <= result["target_test/acc"] <= 100.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in records if r["kind"] == "train" for k, v in r.items() if k not in ("kind",))


def test_text_trains_in_bf16(root, hf_models, tmp_path):
    raw = text_config(root, hf_models["bert"], "source_only", train__precision="bf16")
    experiment = build(load_config(raw=raw))
    trainer = experiment.trainer(None, progress=False)
    seen = []
    query = experiment.method.encoder.backbone.model.encoder.layer[0].attention.self.query  # a Linear in the encoder
    handle = query.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    result = trainer.fit()
    handle.remove()
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # the encoder ran under bf16 autocast
    assert result["target_test/acc"] > 60.0


@pytest.mark.slow
def test_text_trains_under_torch_compile(root, hf_models, tmp_path):
    raw = text_config(root, hf_models["bert"], "dann", iterations=6, train__compile="default")
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["step"] == 6 and np.isfinite(losses(tmp_path / "run")).all()


@pytest.mark.slow
def test_two_process_torchrun_on_text(root, hf_models, tmp_path):
    import shutil
    import subprocess
    import sys

    import yaml

    config = tmp_path / "text.yaml"
    config.write_text(yaml.safe_dump(text_config(root, hf_models["bert"], "dann", iterations=6,
                                                 train__checkpoint_every=3, train__log_every=3)))
    launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    done = subprocess.run([launcher, "--standalone", "--nproc_per_node", "2", "-m", "transferlab.cli", "train",
                           str(config), "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"world_size": 2' in done.stdout and done.stdout.count("run saved in") == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()
