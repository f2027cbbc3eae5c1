"""Cross-lingual text transfer (issue #19) end to end on a toy English/Spanish sentiment set and a tiny BERT built from
a config: zero-shot on several target sets in one run (data.eval), translate-test and translate-train through
``DomainConfig.translate`` (word by word over a toy lexicon), adversarial language adaptation with the unchanged
DANN, the CLI's translate / new-encoder / aligned commands, and their errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_tiny import TEXT_WORDS, tiny_bert, tiny_xlmr, toy_sentences, write_toy_text
from transferlab import data as tl_data
from transferlab.cli import main
from transferlab.data.translate import DictionaryTranslator
from transferlab.errors import ConfigError
from transferlab.experiment import build, load_config, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    texts = [t for lang in ("en", "es") for _, t in toy_sentences(lang, 200, 1)]
    return tiny_bert(tmp_path_factory.mktemp("hf") / "bert", texts)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    folder = write_toy_text(tmp_path / "data")
    # an en<TAB>es lexicon of the toy words (the OpeNER lexicons' layout), read inverted for es -> en
    en, es = TEXT_WORDS["en"], TEXT_WORDS["es"]
    pairs = [(a, b) for group_en, group_es in zip(en, es) for a, b in zip(group_en, group_es)]
    (folder / "en-es.txt").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    return tmp_path / "data"


def config(root: Path, bert: Path, **data) -> dict:
    return {
        "seed": 0,
        "data": {"root": str(root), "source": {"name": "toytext", "part": "en_train"}, "batch_size": 16, **data},
        "model": {"backbone": f"hf:{bert}", "bottleneck_dim": 0},
        "method": {"name": "source_only"},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": 60, "eval_every": 0, "log_every": 20, "checkpoint_every": 0},
    }


def test_translate_test_beats_zero_shot_and_is_evaluated_next_to_it_in_one_run(root, bert, tmp_path):
    lexicon = str(root / "toytext" / "en-es.txt")
    raw = config(root, bert, test={"name": "toytext", "part": "es_test"}, eval=[
        {"name": "toytext", "part": "es_test", "translate": {"backend": f"dictionary:{lexicon}"}},
        {"name": "toytext", "part": "en_test"}])
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert {"target_test/acc", "es_test@dictionary/acc", "en_test/acc", "es_test@dictionary/macro_f1"} <= set(result)
    # Raw Spanish shares only the cognates with English; translated, every sentence carries an English cue.
    assert result["es_test@dictionary/acc"] >= result["target_test/acc"] + 10, result
    assert result["es_test@dictionary/acc"] > 90 and result["en_test/acc"] > 90


def test_zero_shot_with_an_xlm_r_style_encoder_and_layer_wise_lr_decay(root, tmp_path_factory, tmp_path):
    texts = [t for lang in ("en", "es") for _, t in toy_sentences(lang, 200, 1)]
    xlmr = tiny_xlmr(tmp_path_factory.mktemp("xlmr") / "xlmr", texts)
    raw = config(root, xlmr, test={"name": "toytext", "part": "es_test"}, eval=[{"name": "toytext", "part": "en_test"}])
    raw["model"].update(layer_lr_decay=0.8, hf={"pooling": "cls"})
    raw["train"]["precision"] = "bf16"
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["en_test/acc"] > 80 and "target_test/acc" in result  # learnt English; scored on Spanish too


def test_a_translated_set_holds_the_translators_output(root):
    from transferlab.config import DomainConfig
    from transferlab.experiment import load_domain

    lexicon = root / "toytext" / "en-es.txt"
    domain = DomainConfig(name="toytext", part="es_test", translate={"backend": f"dictionary:{lexicon}"})
    translated = load_domain(domain, root, 0)
    original = tl_data.load("toytext", "es_test", root)
    assert translated.texts == DictionaryTranslator.from_files([lexicon], "es", "en").translate(original.texts)
    assert translated.texts != original.texts and translated.languages == ["en"] * len(original)
    assert translated.y.tolist() == original.y.tolist()


def test_translate_train_trains_on_the_translations(root, bert, tmp_path):
    lexicon = str(root / "toytext" / "en-es.txt")
    raw = config(root, bert, source={"name": "toytext", "part": "en_train",
                                     "translate": {"backend": f"dictionary:{lexicon}", "target": "es"}},
                 test={"name": "toytext", "part": "es_test"})
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["target_test/acc"] > 90  # trained on Spanish (translated), tested on Spanish


def test_adversarial_language_adaptation_runs_the_unchanged_dann(root, bert, tmp_path):
    raw = config(root, bert, target={"name": "toytext", "part": "es_train"})
    raw["method"] = {"name": "dann"}
    result = train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert result["test_set"] == "toytext/es_test" and result["method"] == "dann"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("transfer_loss" in r for r in records), "the language discriminator's loss is logged"


@pytest.mark.data
def test_an_unlabelled_target_of_another_label_space_keeps_every_sentence_and_no_label(data_root, bert):
    # binary source (mixed dropped by the *source* labels); the Spanish target keeps all its sentences, mixed
    # included, because selecting them would read target labels
    raw = config(data_root, bert, source={"name": "opener_sentiment", "part": "en_train", "classes": [[0, 1], [2, 3]]},
                 target={"name": "opener_sentiment", "part": "es_train"})
    raw["method"] = {"name": "dann"}
    experiment = build(load_config(raw=raw))
    assert experiment.target.y is None and len(experiment.target) == len(tl_data.load("opener_sentiment", "es_train"))
    assert experiment.test.num_classes == 2 and experiment.test.part == "es_test"  # the source's label space


def test_translate_needs_a_known_backend_and_says_which_exist(root, bert, tmp_path):
    from transferlab.errors import TransferlabError

    raw = config(root, bert, test={"name": "toytext", "part": "es_test", "translate": {"backend": "nonsense"}})
    with pytest.raises(TransferlabError, match="apertium"):
        build(load_config(raw=raw))
    with pytest.raises(ConfigError, match="translate"):
        load_config(raw=config(root, bert, test={"name": "toytext", "part": "es_test", "translate": {"to": "en"}}))


def test_cli_translate_writes_a_tsv_and_reports_a_missing_lexicon(root, tmp_path, capsys):
    lexicon = root / "toytext" / "en-es.txt"
    out = tmp_path / "es.tsv"
    code = main(["crosslingual", "translate", "toytext:es_test", "--with", f"dictionary:{lexicon}", "--out", str(out),
                 "--data-root", str(root)])
    assert code == 0
    lines = out.read_text().splitlines()
    original = tl_data.load("toytext", "es_test", root)
    assert lines[0] == "label\ttext" and len(lines) == len(original) + 1
    assert lines[1].split("\t")[1] == DictionaryTranslator.from_files([lexicon], "es", "en").translate(original.texts[:1])[0]
    code = main(["crosslingual", "translate", "toytext:es_test", "--with", f"dictionary:{tmp_path / 'none.txt'}",
                 "--data-root", str(root)])
    assert code == 2 and "none.txt" in capsys.readouterr().err


def test_cli_new_encoder_makes_a_backbone_the_engine_loads(root, tmp_path, capsys):
    folder = tmp_path / "enc"
    assert main(["crosslingual", "new-encoder", "--texts", "toytext:en_train,es_train", "--out", str(folder),
                 "--vocab-size", "200", "--layers", "1", "--hidden", "16", "--data-root", str(root)]) == 0
    assert "hf:" in capsys.readouterr().out
    raw = config(root, folder, test={"name": "toytext", "part": "es_test"})
    raw["train"]["iterations"] = 5
    assert "target_test/acc" in train(load_config(raw=raw), tmp_path / "run", progress=False)
    assert main(["crosslingual", "new-encoder", "--texts", "toytext:en_train", "--out", str(folder),
                 "--data-root", str(root)]) == 2, "an existing folder is never overwritten"


@pytest.mark.data
def test_cli_aligned_embeddings_on_opener(data_root, tmp_path, capsys):
    code = main(["crosslingual", "aligned", "--target", "es", "--vectors-dir", str(tmp_path / "vec"),
                 "--out", str(tmp_path / "al"), "--data-root", str(data_root)])
    assert code == 0
    result = json.loads((tmp_path / "al" / "result.json").read_text())
    assert result["seed_pairs"] > 100 and 0 <= result["target_test/macro_f1"] <= 100
    assert result["vectors"]["es"]["tokens"] > 10_000
    assert list((tmp_path / "vec").glob("*.vec")), "trained vectors are kept for the next run"


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "crosslingual"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_the_packaged_crosslingual_configs_validate(name):
    config = load_config(CONFIGS / name)
    assert config.data.source.part == ("es_train" if name == "target_supervised.yaml" else "en_train")
    if name == "xlmr_zero_shot.yaml":
        assert config.model.backbone.startswith("hf:") and config.model.layer_lr_decay < 1
        assert [d.part for d in config.data.eval] == ["ca_test", "eu_test"]  # inherited from zero_shot.yaml
