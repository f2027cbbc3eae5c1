"""Speech recognition through the one engine (issue #17): the CTC task (vocabulary, targets, WER/CER), the CTC method
with group heads, adapters, gradient accumulation, warm-up, row selection and a resumed CTC run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_tiny import tiny_wav2vec2
from transferlab.data.transcripts import CTCVocabulary, normalize_transcript
from transferlab.engine.metrics import edit_counts, error_rates
from transferlab.errors import ConfigError, DataError
from transferlab.experiment import build, load_config, resolved_config, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LETTERS = {"a": 300.0, "b": 900.0, "c": 1500.0}


def write_toy_speech(root: Path, name: str = "toyspeech", n: int = 48, rate: int = 8000) -> Path:
    """'Words' of 1-3 letters, each letter a 0.1 s tone (a 300 Hz, b 900 Hz, c 1500 Hz) with noise; a speaker and a
    group column (child utterances: every tone 1.5x higher)."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("test", n // 2)):
        clips, texts, groups, speakers = [], [], [], []
        for i in range(count):
            word = "".join(rng.choice(list(LETTERS), size=int(rng.integers(1, 4))))
            child = i % 2 == 1
            t = np.arange(int(0.1 * rate)) / rate
            tones = [np.sin(2 * np.pi * LETTERS[c] * (1.5 if child else 1.0) * t) for c in word]
            gaps = [np.zeros(int(0.03 * rate))] * len(word)
            wave = np.concatenate([x for pair in zip(tones, gaps) for x in pair]) * 0.5
            wave += 0.02 * rng.standard_normal(len(wave))
            clips.append((wave * 32767).astype(np.int16))
            texts.append(word.upper())
            groups.append("child" if child else "adult")
            speakers.append(f"s{i % 4}")
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        np.savez_compressed(folder / f"{split}.npz", audio=np.concatenate(clips), offsets=offsets, lengths=lengths,
                            sample_rate=np.int64(rate), text=np.array(texts), group=np.array(groups),
                            speaker=np.array(speakers))
    (folder / "dataset.json").write_text(json.dumps(
        {"kind": "audio", "format": "audio", "num_classes": 1, "parts": ["train", "test"]}))
    return folder


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    return tiny_wav2vec2(tmp_path_factory.mktemp("hf") / "w2v")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    write_toy_speech(tmp_path / "data")
    return tmp_path / "data"


def ctc_config(root: Path, w2v: Path, iterations: int = 40, **sections) -> dict:
    raw = {
        "seed": 0,
        "task": {"name": "ctc", "text": "text"},
        "data": {"root": str(root), "source": {"name": "toyspeech", "part": "train"},
                 "test": {"name": "toyspeech", "part": "test"}, "batch_size": 8, "audio": {"sample_rate": 8000}},
        "model": {"backbone": f"hf:{w2v}", "bottleneck_dim": 0, "hf": {"freeze_feature_encoder": True}},
        "method": {"name": "ctc", "dropout": 0.0},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": iterations, "eval_every": 0, "log_every": 10, "checkpoint_every": 0},
    }
    for key, value in sections.items():
        section, name = key.split("__")
        raw[section][name] = value
    return raw


def losses(run: Path, key: str = "ctc_loss") -> list[float]:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


# --- metrics and transcripts ------------------------------------------------------------------------------------


def test_wer_and_cer_equal_hand_computed_values():
    # "the cat sat" vs "the bat sat down": 1 substitution + 1 insertion over 3 words; characters: c->b (1 substitution)
    # plus " down" (5 insertions) over 11 reference characters
    counts = edit_counts(["the cat sat", "hello"], ["the bat sat down", "hello"])
    assert counts.tolist() == [2.0, 4.0, 6.0, 16.0, 2.0]
    assert error_rates(counts) == pytest.approx({"wer": 50.0, "cer": 37.5})
    # corpus-level, not a mean of per-utterance rates: 1 error in 1 word and 0 in 9 words is 10 %, not 50 %
    one = edit_counts(["yes", "a b c d e f g h i"], ["no", "a b c d e f g h i"])
    assert error_rates(one)["wer"] == pytest.approx(10.0)
    # an empty reference: its hypothesis words are insertions
    assert edit_counts([""], ["uh huh"]).tolist()[:2] == [2.0, 0.0]


def test_the_normaliser_spells_numbers_and_drops_punctuation_case_and_fillers():
    assert normalize_transcript("Um, I have 12 apples -- uh, don't I?", disfluencies=True) == "i have twelve apples don't i"
    assert normalize_transcript("Um, the 3rd one.") == "um the third one"  # fillers kept unless asked
    assert normalize_transcript("Twenty-one", numbers=False) == "twenty one"
    assert normalize_transcript("A.B", punctuation=False, lowercase=False) == "A.B"


def test_the_vocabulary_round_trips_and_greedy_decoding_merges_repeats_but_not_across_blanks():
    vocab = CTCVocabulary.build(["hello world"])
    assert vocab.blank == 0 and vocab.tokens[:3] == ["<pad>", "<unk>", "|"]
    assert vocab.decode(vocab.encode("hello world")) == "hello world"
    h, e, l, o = (vocab.encode(c)[0] for c in "helo")
    path = [h, h, 0, e, l, l, 0, l, o, o, 0]  # "hh" merges; "l <blank> l" stays two letters
    log_probs = torch.full((1, len(path), len(vocab)), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert vocab.greedy(log_probs, torch.tensor([len(path)])) == ["hello"]
    assert vocab.greedy(log_probs, torch.tensor([4])) == ["he"]  # only the valid frames are decoded
    assert vocab.encode("z") == [vocab.tokenizer.unk_token_id]


# --- training -----------------------------------------------------------------------------------------------------


def test_ctc_fine_tuning_lowers_the_loss_with_the_feature_encoder_bitwise_frozen(root, w2v, tmp_path):
    config = load_config(raw=ctc_config(root, w2v, iterations=60))
    experiment = build(config)
    before = {k: v.clone() for k, v in experiment.method.encoder.backbone.model.feature_extractor.state_dict().items()}
    trainer = experiment.trainer(tmp_path / "run", progress=False)
    trainer.prepare_run(resolved_config(config))
    result = trainer.fit()
    after = experiment.method.encoder.backbone.model.feature_extractor.state_dict()
    assert all(torch.equal(before[k], after[k].cpu()) for k in before)
    curve = losses(tmp_path / "run")
    assert curve[-1] < 0.7 * curve[0], curve
    assert {"target_test/wer", "target_test/cer"} <= set(result)
    assert 0.0 <= result["target_test/cer"] <= 100.0 and result["target_test/utterances"] == 24
    assert result["parameters"]["trainable"] < result["parameters"]["total"]  # the feature encoder is frozen


def test_a_resumed_ctc_run_with_augmentation_matches_an_uninterrupted_one(root, w2v, tmp_path):
    raw = ctc_config(root, w2v, iterations=8, train__checkpoint_every=4, train__deterministic=True)
    raw["data"]["audio"]["augment"] = [{"name": "noise", "p": 0.5, "range": [10, 30]},
                                       {"name": "tempo", "p": 0.5, "range": [0.9, 1.1]}]
    config = load_config(raw=raw)
    whole = train(config, tmp_path / "whole", progress=False)
    trainer = build(config).trainer(tmp_path / "cut", progress=False)
    trainer.prepare_run(resolved_config(config))
    trainer.fit(stop_at=4)
    resumed = train(config, tmp_path / "cut", progress=False, resume=True)
    assert resumed["resumed_from_step"] == 4
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    assert resumed["target_test/cer"] == whole["target_test/cer"]
    # the run folder holds the vocabulary as a transformers tokenizer
    assert CTCVocabulary.load(tmp_path / "whole").tokens == build(config).method.vocab.tokens


def test_augmentation_changes_training_batches_only(root, w2v):
    raw = ctc_config(root, w2v)
    raw["data"]["audio"]["augment"] = [{"name": "noise", "p": 1.0, "range": [5, 5]}]
    experiment = build(load_config(raw=raw))
    calls = []
    augment = experiment.augment
    experiment.augment = lambda x: calls.append(1) or augment(x)  # counts every batch it touches
    trainer = experiment.trainer(None, progress=False)
    plain = build(load_config(raw=ctc_config(root, w2v))).trainer(None, progress=False)
    torch.manual_seed(0)
    noisy_batch = next(trainer.streams["source"])
    clean_batch = next(plain.streams["source"])
    assert calls == [1] and not torch.equal(noisy_batch.x["input_values"], clean_batch.x["input_values"])
    assert torch.equal(noisy_batch.targets["labels"], clean_batch.targets["labels"])
    trainer.evaluate()
    assert calls == [1]  # evaluation sets are never augmented


# --- group heads ----------------------------------------------------------------------------------------------


def _grouped(root, w2v, route="predicted"):
    raw = ctc_config(root, w2v)
    raw["task"]["group"] = "group"
    raw["method"].update({"group_heads": ["adult", "child"], "group_loss_weight": 1.0, "route": route})
    return build(load_config(raw=raw))


def test_adult_and_child_heads_route_by_known_or_predicted_group(root, w2v):
    experiment = _grouped(root, w2v, route="known")
    method = experiment.method.eval()
    vocab = method.vocab
    assert method.groups == ["adult", "child"]
    a, b = vocab.encode("a")[0], vocab.encode("b")[0]
    with torch.no_grad():
        for head, letter in zip(method.heads, (a, b)):  # head 0 always says "a", head 1 always "b"
            head.weight.zero_()
            head.bias.fill_(-5.0)
            head.bias[letter] = 5.0
        method.group_head.weight.zero_()
        method.group_head.bias.copy_(torch.tensor([0.0, 3.0]))  # the classifier always predicts "child"
    batch = experiment.test.batch(torch.arange(4))
    known = torch.tensor([0, 1, 0, 1])
    texts, predicted = method.transcribe(batch, known)
    assert texts == ["a", "b", "a", "b"]
    assert predicted.tolist() == [1, 1, 1, 1]
    method.hparams.route = "predicted"
    assert method.transcribe(batch, known)[0] == ["b", "b", "b", "b"]  # the predicted group picks the head
    assert method.transcribe(batch, None)[0] == ["b", "b", "b", "b"]  # unknown group: the predicted one


def test_each_utterance_trains_only_its_own_groups_head(root, w2v):
    experiment = _grouped(root, w2v)
    method = experiment.method
    adults = torch.nonzero(experiment.source.targets["group"] == 0).squeeze(1)[:4]
    batch_x = experiment.source.batch(adults)
    from transferlab.data.batch import Batch

    batch = Batch(batch_x, None, experiment.source.batch_targets(adults))
    grads = {}

    class Ctx:
        def backward_and_step(self, loss, *names):
            loss.backward()
            grads.update({i: h.weight.grad for i, h in enumerate(method.heads)})

    method.update(batch, Ctx())
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None or grads[1].abs().sum() == 0  # the child head got nothing from adult utterances


def test_evaluation_reports_wer_per_group_and_the_group_accuracy(root, w2v, tmp_path):
    experiment = _grouped(root, w2v)
    trainer = experiment.trainer(None, progress=False)
    metrics = trainer.evaluate()
    assert {"target_test/wer_adult", "target_test/wer_child", "target_test/cer_child", "target_test/group_acc"} <= set(metrics)


# --- adapters, accumulation, warm-up, selection -----------------------------------------------------------------


def test_a_zero_initialised_adapter_leaves_the_model_unchanged_and_only_adapters_train(root, w2v, tmp_path):
    plain = build(load_config(raw=ctc_config(root, w2v))).method.eval()
    raw = ctc_config(root, w2v, iterations=5)
    raw["model"]["adapter"] = {"bottleneck": 8, "train": "adapters"}
    experiment = build(load_config(raw=raw))
    method = experiment.method.eval()
    x = experiment.test.batch(torch.arange(3))
    with torch.no_grad():
        torch.testing.assert_close(method.states(x)[0], plain.states(x)[0])  # identity at initialisation
    frozen = {k: v.clone() for k, v in method.state_dict().items() if ".adapters." not in k}
    trainer = experiment.trainer(tmp_path / "run", progress=False)
    trainer.prepare_run(resolved_config(load_config(raw=raw)))
    result = trainer.fit()
    state = method.state_dict()
    assert all(torch.equal(frozen[k], state[k]) for k in frozen)  # everything but the adapters bitwise unchanged
    adapters = sum(p.numel() for n, p in method.named_parameters() if ".adapters." in f".{n}")
    assert result["parameters"]["trainable"] == adapters > 0
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in state.items() if k.endswith("up.weight"))


def test_model_init_continues_from_a_finished_run_with_new_adapters(root, w2v, tmp_path):
    config = load_config(raw=ctc_config(root, w2v, iterations=4))
    train(config, tmp_path / "first", progress=False)
    raw = ctc_config(root, w2v, iterations=4)
    raw["model"].update({"init": str(tmp_path / "first"), "adapter": {"bottleneck": 4}})
    raw["task"]["vocab"] = str(tmp_path / "first")
    method = build(load_config(raw=raw)).method
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "first" / "model.safetensors"))
    assert torch.equal(method.heads[0].weight, weights["heads.0.weight"])
    raw["model"]["init"] = str(tmp_path / "nowhere")
    with pytest.raises(Exception, match="model.init"):
        build(load_config(raw=raw))


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    from transferlab.data.datasets import ArrayDataset
    from transferlab.engine import Trainer
    from transferlab.config import OptimConfig, TrainConfig
    from transferlab.methods import Supervised
    from transferlab.models import Encoder
    from transferlab.models.backbones import MLP

    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g), "toy", "train", 3)

    def run(batch_size, accumulation):
        torch.manual_seed(0)
        method = Supervised(Encoder(MLP(5, [8], dropout=0.0), 0), 3)
        trainer = Trainer(method, data, batch_size=batch_size, progress=False,
                          train=TrainConfig(iterations=3, eval_every=0, log_every=1, grad_accumulation=accumulation,
                                            device="cpu"),
                          optim=OptimConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.0, lr_schedule="constant"))
        trainer.fit()
        return method.state_dict()

    big, accumulated, small = run(16, 1), run(8, 2), run(8, 1)
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(small[k], big[k]) for k in big)


def test_warmup_rises_linearly_then_the_schedule_runs_over_the_rest():
    from transferlab.config import OptimConfig
    from transferlab.engine.optim import lr_schedule

    schedule = lr_schedule(OptimConfig(lr_schedule="linear", warmup=0.2))
    assert [round(schedule(p), 6) for p in (0.0, 0.1, 0.2, 0.6, 1.0)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_schedule(OptimConfig(lr_schedule="constant", warmup=0.5))(0.25) == pytest.approx(0.5)


def test_where_and_exclude_select_rows_by_a_column(root, w2v):
    from transferlab.config import DomainConfig
    from transferlab.experiment import load_domain

    kept = load_domain(DomainConfig(name="toyspeech", part="train", where={"speaker": ["s0", "s1"]}), root, 0)
    assert set(kept.extras["speaker"].tolist()) == {"s0", "s1"} and len(kept) == 24
    rest = load_domain(DomainConfig(name="toyspeech", part="train", exclude={"speaker": ["s0"]}), root, 0)
    assert "s0" not in set(rest.extras["speaker"].tolist()) and len(rest) == 36
    with pytest.raises(DataError, match="no per-sample column 'accent'"):
        load_domain(DomainConfig(name="toyspeech", part="train", where={"accent": ["x"]}), root, 0)
    with pytest.raises(DataError, match=r"\['s9'\] do not occur"):
        load_domain(DomainConfig(name="toyspeech", part="train", where={"speaker": ["s9"]}), root, 0)


def test_ctc_needs_the_ctc_task_and_a_sequence_encoder(root, w2v):
    raw = ctc_config(root, w2v)
    raw.pop("task")
    with pytest.raises(ConfigError, match="task.name"):
        build(load_config(raw=raw))
    raw = ctc_config(root, w2v)
    raw["method"]["group_heads"] = ["adult"]
    with pytest.raises(ConfigError, match="task.group"):
        build(load_config(raw=raw))


# --- beam search ---------------------------------------------------------------------------------------------------

ARPA = """\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t0
-0.5\t</s>\t0
{ab}\tab\t0
{ba}\tba\t0

\\2-grams:
-0.1\tab </s>
-0.1\tba </s>

\\end\\
"""


def test_beam_search_sums_alignments_and_a_language_model_decides_between_words(tmp_path):
    pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text (pip install flashlight-text)")
    vocab = CTCVocabulary.build(["ab ba"])
    a, b = vocab.encode("a")[0], vocab.encode("b")[0]
    # two frames, blank 0.6 and "a" 0.4 in each: the best path is blank-blank (0.36), but the labelling "a" has three
    # paths (aa, a-, -a) worth 0.64; greedy decoding says "", beam search (summing alignments) says "a"
    two = torch.full((1, 2, len(vocab)), -30.0)
    two[0, :, 0], two[0, :, a] = torch.tensor(0.6).log(), torch.tensor(0.4).log()
    assert vocab.greedy(two, torch.tensor([2])) == [""]
    assert vocab.beam_search(two, torch.tensor([2]), beam_size=5) == ["a"]
    # "a"/"b" equally likely in four frames, then the word delimiter: the language model picks the word
    frames = torch.full((1, 5, len(vocab)), -30.0)
    frames[0, :4, a] = frames[0, :4, b] = torch.tensor(0.45).log()
    frames[0, :4, 0] = torch.tensor(0.1).log()
    frames[0, 4, vocab.tokens.index("|")] = 0.0  # the word delimiter ends the word
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("ab\ta b |\nba\tb a |\n")
    for preferred, scores in (("ab", {"ab": -0.1, "ba": -3.0}), ("ba", {"ab": -3.0, "ba": -0.1})):
        lm = tmp_path / f"{preferred}.arpa"
        lm.write_text(ARPA.format(**scores))
        assert vocab.beam_search(frames, torch.tensor([5]), lm=str(lm), lexicon=str(lexicon), beam_size=20) == [preferred]
    with pytest.raises(ConfigError, match="lexicon"):
        vocab.beam_search(frames, torch.tensor([5]), lm=str(lm))


# --- the speech CLI ------------------------------------------------------------------------------------------------


def test_speech_whisper_cli_warps_only_the_chosen_group_and_scores_by_group(root, monkeypatch, capsys, tmp_path):
    """The recogniser is a stand-in here (tests/test_whisper.py runs the real one): it 'hears' the reference unless
    the audio was warped, which this test marks by zeroing it."""
    import transferlab.data.audio_augment as augment
    import transferlab.speech.whisper as whisper
    from transferlab.cli import main

    calls = []

    def fake_normalize(wave, rate, target, *, f0=None, formant_exponent=1.0, max_factor=2.0):
        calls.append((target, f0, formant_exponent))
        return torch.zeros_like(wave), {"f0": f0, "factor": target / f0}

    class FakeRecognizer:
        def __init__(self, *args, **kwargs):
            pass

        def transcribe_many(self, waves, rate, progress=True):
            return ["" if not np.any(w) else "heard" for w in waves]

    monkeypatch.setattr(augment, "normalize_toward", fake_normalize)
    monkeypatch.setattr(augment, "estimate_f0", lambda wave, rate: 300.0)
    monkeypatch.setattr(whisper, "WhisperRecognizer", FakeRecognizer)
    out = tmp_path / "wer.json"
    code = main(["speech", "whisper", "toyspeech:test", "--data-root", str(root), "--by", "group", "--normalize",
                 "group=child", "--target-f0", "150", "--formant-exponent", "0", "--out", str(out), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    children = [u for u in result["utterances"] if u["group"] == "child"]
    adults = [u for u in result["utterances"] if u["group"] == "adult"]
    assert len(calls) == len(children) == 12 and all(c == (150.0, 300.0, 0.0) for c in calls)
    assert all(u["hypothesis"] == "" and u["normalised"]["factor"] == 0.5 for u in children)
    assert all(u["hypothesis"] == "heard" and "normalised" in u and u["normalised"] is None for u in adults)
    assert result["table"]["by"]["group"]["child"]["wer"] == 100.0  # every warped (zeroed) utterance lost
    assert "group=child" in capsys.readouterr().out
    assert main(["speech", "whisper", "toyspeech:test", "--data-root", str(root), "--normalize", "accent=x"]) == 2


def test_speech_wer_and_eval_score_a_finished_ctc_run_by_speaker(root, w2v, tmp_path, capsys):
    from transferlab.cli import main

    raw = ctc_config(root, w2v, iterations=4)
    raw["task"]["group"] = "group"
    train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "task.json").read_text())["groups"] == ["adult", "child"]
    out = tmp_path / "wer.json"
    assert main(["speech", "wer", str(tmp_path / "run"), "--on", "toyspeech:test", "--where", "speaker=s0,s1",
                 "--by", "speaker", "group", "--out", str(out), "--data-root", str(root)]) == 0
    result = json.loads(out.read_text())
    assert set(result["table"]["by"]["speaker"]) == {"s0", "s1"} and result["table"]["all"]["utterances"] == 12
    assert all(set(u["reference"]) <= set("abc") and u["reference"] for u in result["utterances"])  # normalised
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"target_test/wer", "target_test/cer"} <= set(printed) and printed["samples"] == 24


def test_an_utterance_shorter_than_the_specaugment_mask_is_a_clear_error(w2v, tmp_path):
    import shutil

    from transferlab.errors import TransferlabError
    from transferlab.models.encoders import create_hf_encoder

    folder = tmp_path / "w2v"
    shutil.copytree(w2v, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(mask_time_prob=0.5, mask_time_length=10)
    (folder / "config.json").write_text(json.dumps(config))
    encoder = create_hf_encoder(str(folder)).train()
    with pytest.raises(TransferlabError, match="mask_time_length=10"):
        encoder.sequence({"input_values": torch.randn(2, 400), "attention_mask": torch.ones(2, 400, dtype=torch.long)})


def test_a_wav2vec2_ctc_checkpoint_is_fine_tuned_with_its_own_vocabulary_encoder_and_head(root, tmp_path):
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

    folder = tmp_path / "ctc-checkpoint"
    folder.mkdir()
    # the checkpoint's characters in an order of its own (the training transcripts would give a, b, c)
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 2, "c": 3, "b": 4, "a": 5}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
                         bos_token=None, eos_token=None).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                            num_feat_extract_layers=3, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=6, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    saved = load_file(str(folder / "model.safetensors"))
    raw = ctc_config(root, folder)
    raw["task"]["vocab"] = str(folder)
    method = build(load_config(raw=raw)).method
    assert method.vocab.tokens == ["<pad>", "<unk>", "|", "c", "b", "a"]  # the checkpoint's characters, in its order
    encoder = method.encoder.backbone.model
    assert torch.equal(encoder.encoder.layers[0].attention.q_proj.weight,
                       saved["wav2vec2.encoder.layers.0.attention.q_proj.weight"])
    assert torch.equal(method.heads[0].weight, saved["lm_head.weight"])  # its recogniser, not a new head
    raw["task"]["vocab"] = None  # the training transcripts' characters: same size, other order, so a new head
    other = build(load_config(raw=raw)).method
    assert other.vocab.tokens == ["<pad>", "<unk>", "|", "a", "b", "c"]
    assert not torch.equal(other.heads[0].weight, saved["lm_head.weight"])
