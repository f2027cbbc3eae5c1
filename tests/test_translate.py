"""Translation back-ends (transferlab.data.translate): the lexicon translator's tokens, case and
punctuation, the persistent cache, a tiny Marian model through the real from_pretrained path, and the Apertium
engine (skipped where the ``apertium`` program is not installed; .ci/run installs it)."""

from __future__ import annotations

import gzip
import multiprocessing
import shutil

import pytest

from transferlab.data.translate import (
    ApertiumTranslator,
    CachedTranslator,
    DictionaryTranslator,
    HFSeq2SeqTranslator,
    TranslationCache,
    Translator,
    cached,
    make_translator,
)
from transferlab.errors import TransferlabError

LEXICON = {"hotel": ["hotel"], "muy": "very", "bueno": ["good", "fine"], "genial": ["great"], "limpia": ["clean"],
           "no": ["not"], "habitación": ["room"]}


# --- dictionary ---------------------------------------------------------------------------------------------------


def test_dictionary_keeps_unknown_words_and_whitespace():
    # catches: an unknown word dropped or replaced by "", whitespace collapsed, an empty text turned into " "
    translator = DictionaryTranslator(LEXICON, "es", "en")
    assert translator.translate(["hotel xyzzy muy  bueno", "", "  ", "zzz"]) == [
        "hotel xyzzy very  good", "", "  ", "zzz"]


def test_dictionary_restores_case_and_takes_the_first_translation():
    # catches: lookup without lowercasing, the case shape lost, a later translation ("fine") preferred
    translator = DictionaryTranslator(LEXICON, "es", "en")
    assert translator.translate(["Hotel MUY Bueno", "HABITACIÓN", "A"]) == ["Hotel VERY Good", "ROOM", "A"]


def test_dictionary_keeps_punctuation_tokens_and_attached_punctuation():
    # catches: "genial!" looked up whole and missed, the punctuation dropped, a punctuation token touched
    translator = DictionaryTranslator(LEXICON, "es", "en")
    assert translator.translate(['¡Genial! hotel , muy bueno . "limpia" ...']) == [
        '¡Great! hotel , very good . "clean" ...']


def test_dictionary_files_are_read_inverted_for_the_reverse_direction(tmp_path):
    # catches: an en-xx file read the wrong way round for xx->en, underscore residue taken as a translation,
    # MUSE's whitespace format or .gz not read, a key that ignores the direction or the content
    lexicon = tmp_path / "en-es.txt"
    lexicon.write_text("fine_buenoD\tbueno\ngood\tbueno\nnice\tbueno\nvery\tmuy\nroom\thabitación\n", encoding="utf-8")
    to_english = DictionaryTranslator.from_files(lexicon, "es", "en")
    to_spanish = DictionaryTranslator.from_files(lexicon, "en", "es")
    assert to_english.translate(["Muy bueno"]) == ["Very good"]
    assert to_spanish.translate(["very nice room"]) == ["muy bueno habitación"]
    muse = tmp_path / "es-en.txt.gz"
    with gzip.open(muse, "wt", encoding="utf-8") as handle:
        handle.write("bueno good\nmuy very\n")
    from_muse = DictionaryTranslator.from_files([muse], "es", "en")
    assert from_muse.translate(["muy bueno"]) == ["very good"]
    assert DictionaryTranslator.from_files(lexicon, "es", "en", invert=False).translate(["good"]) == ["bueno"]
    assert len({to_english.key, to_spanish.key}) == 2
    assert from_muse.key != DictionaryTranslator({"bueno": "nice", "muy": "very"}, "es", "en").key
    assert from_muse.key == DictionaryTranslator({"bueno": "good", "muy": "very"}, "es", "en").key
    assert isinstance(to_english, Translator)


def test_dictionary_opener_and_muse_lexicons(data_root):
    # catches: the named lexicons resolved to the wrong file or direction under the data root
    opener = make_translator("dictionary:opener-bingliu", "es", "en", data_root=data_root)
    assert opener.translate(["La habitación estaba sucio , no limpio ."]) == [
        "La habitación estaba dirty , no clean ."]
    assert make_translator("dictionary:opener-apertium", "ca", "en", data_root=data_root).translate(["hotel"]) == [
        "hotel"]
    muse = make_translator("dictionary:muse", "es", "en", data_root=data_root)
    assert muse.translate(["Hotel muy bueno"]) == ["Hotel very good"]
    with pytest.raises(TransferlabError, match="no MUSE dictionary for eu->en"):
        make_translator("dictionary:muse", "eu", "en", data_root=data_root)


def test_make_translator_rejects_unknown_specs(tmp_path):
    # catches: an unknown spec or a missing lexicon file failing with a traceback instead of the list of forms
    with pytest.raises(TransferlabError, match="dictionary:<lexicon") as info:
        make_translator("google", "es", "en")
    assert "hf:<" in str(info.value) and "apertium" in str(info.value)
    with pytest.raises(TransferlabError, match="not found"):
        make_translator("dictionary:missing.txt", "es", "en", data_root=tmp_path)
    with pytest.raises(TransferlabError, match="folder .* not found"):
        make_translator("hf:./no-such-model", "es", "en").translate(["hola"])


# --- cache --------------------------------------------------------------------------------------------------------


class CountingTranslator:
    """A fake back-end: upper-cases, and records every call it receives."""

    def __init__(self, key: str = "fake:es-en"):
        self.key = key
        self.calls: list[list[str]] = []

    def translate(self, texts):
        self.calls.append(list(texts))
        return [text.upper() for text in texts]


def test_cache_sends_only_misses_to_the_back_end(tmp_path):
    # catches: a cache that is not consulted, not written, keyed by text alone, or that sends misses one by one
    cache = TranslationCache(tmp_path / "t.sqlite")
    backend = CountingTranslator()
    translator = cached(backend, cache)
    assert translator.translate(["a", "b", "", "a"]) == ["A", "B", "", "A"]
    assert backend.calls == [["a", "b"]]  # each distinct non-empty text once, in one call
    assert CachedTranslator(backend, TranslationCache(tmp_path / "t.sqlite")).translate(["b", "a"]) == ["B", "A"]
    assert backend.calls == [["a", "b"]]  # a second call (a new cache object on the same file): no back-end call
    assert translator.translate(["c", "a", "d", "b"]) == ["C", "A", "D", "B"]
    assert backend.calls[1:] == [["c", "d"]]
    other = CountingTranslator(key="fake:ca-en")
    assert cached(other, cache).translate(["a"]) == ["A"] and other.calls == [["a"]]  # another key misses
    assert len(cache) == 5 and translator.key == backend.key


def _write_rows(path: str, worker: int) -> None:
    cache = TranslationCache(path)
    for i in range(40):  # many small transactions, interleaved with the other process's
        cache.put(f"key{worker}", {f"text {i}": f"translation {worker} {i}"})


def test_cache_takes_writes_from_two_processes(tmp_path):
    # catches: a cache that locks out (or corrupts) a second writer instead of waiting for it
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_rows, args=(path, worker)) for worker in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    cache = TranslationCache(path)
    assert len(cache) == 80
    assert cache.get("key1", ["text 7"]) == {"text 7": "translation 1 7"}


# --- Hugging Face seq2seq -----------------------------------------------------------------------------------------


def tiny_marian(folder, texts, steps: int = 100):
    """A 1-layer MarianMT (d_model 16) with a word-level tokenizer trained on ``texts``, taught to copy them (100 Adam
    steps, half a second: an untrained model says the same words for every input, which would not show the order),
    saved with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    learned = sorted(t for t in tokenizer.get_vocab() if t not in special)  # fixed ids: see hf_tiny.train_tokenizer
    tokenizer.model = models.WordLevel(vocab={t: i for i, t in enumerate(special + learned)}, unk_token="<unk>")
    tokenizer.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(fast), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                          forced_eos_token_id=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = MarianMTModel(config)
    batch = fast(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    # the sinusoidal position tables are rebuilt on loading, not read back: leave them as they are
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if "embed_positions" not in n], lr=3e-2)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_hf_seq2seq_batches_keep_order_and_match_one_by_one(tmp_path):
    # catches: batches put back in sorted order, padding changing a translation, empties sent to the model, a key
    # that depends on the folder's place rather than its content or ignores the decoding settings
    texts = ["el hotel es muy bueno", "malo", "", "la habitación estaba limpia y el personal muy amable", "muy bueno",
             "el personal", "hotel malo", "la habitación"]
    folder = tiny_marian(tmp_path / "marian", [t for t in texts if t])
    translator = HFSeq2SeqTranslator(str(folder), batch_size=3, max_length=16)
    batched = translator.translate(texts)
    assert isinstance(batched, list) and all(isinstance(t, str) for t in batched)
    assert batched == texts  # the model copies: each output is its own input, in place, and "" stays ""
    assert batched == [translator.translate([text])[0] for text in texts]
    assert translator.key.startswith("hf:marian@sha256=")
    copy = shutil.copytree(folder, tmp_path / "copy" / "marian")
    assert HFSeq2SeqTranslator(str(copy), batch_size=8, max_length=16).key == translator.key
    assert HFSeq2SeqTranslator(str(copy), max_length=16, num_beams=2).key != translator.key


# --- Apertium -----------------------------------------------------------------------------------------------------

needs_apertium = pytest.mark.skipif(
    shutil.which("apertium") is None,
    reason="the Apertium engine is not installed: apt-get install apertium apertium-eng-spa apertium-eng-cat "
           "apertium-eu-en (.ci/run does this when it runs as root)")


@needs_apertium
@pytest.mark.parametrize("source, target, texts, words", [
    ("es", "en", ["El hotel es muy bueno .", "La habitación estaba muy limpia ."], ["good", "clean"]),
    ("ca", "en", ["El personal era molt amable .", "L' habitació estava molt neta ."], ["kind", "clean"]),
    ("eu", "en", ["Logela oso garbia zegoen .", "Langileak oso atseginak ziren ."], ["clean", "pleasant"]),
    ("en", "es", ["The room was very clean ."], ["limpia"]),
    ("en", "ca", ["The room was very clean ."], ["net"]),
])
def test_apertium_translates_real_sentences(source, target, texts, words):
    # catches: a wrong mode for an ISO code, texts out of order
    translations = ApertiumTranslator(source, target).translate(texts)
    assert [word in translation.lower() for translation, word in zip(translations, words)] == [True] * len(words)


@needs_apertium
def test_apertium_keeps_one_output_per_line_in_one_process(monkeypatch):
    # catches: neighbouring sentences merged or split (plain -f txt moves words across lines), empty lines lost,
    # one process per sentence, stream escapes left in the output
    texts = [("" if i % 7 == 3 else f"El hotel {i} es muy bueno") for i in range(200)]
    texts[10] = "precio 10$ [oferta] a/b \\ c <d> {e} @f ^g"
    translator = ApertiumTranslator("es", "en")
    runs = []
    run = translator._run
    monkeypatch.setattr(translator, "_run", lambda chunk: runs.append(len(chunk)) or run(chunk))
    out = translator.translate(texts)
    assert len(out) == 200 and runs == [sum(1 for t in texts if t)]
    assert [out[i] == "" for i in range(200)] == [t == "" for t in texts]
    assert all(f" {i} " in out[i] and "good" in out[i] for i in range(200) if texts[i] and i != 10)
    for piece in ("$10", "[", "]", "/", "\\", "<", ">", "{", "}", "@f", "^g"):
        assert piece in out[10]


@needs_apertium
def test_apertium_retries_in_halves_when_output_is_misaligned(monkeypatch):
    # catches: a misaligned run accepted, or a fallback that loses or reorders texts
    translator = ApertiumTranslator("es", "en")
    run = translator._run
    sizes = []

    def flaky(chunk):
        sizes.append(len(chunk))
        return None if len(chunk) > 2 else run(chunk)

    monkeypatch.setattr(translator, "_run", flaky)
    out = translator.translate([f"hotel {i} muy bueno" for i in range(5)])
    assert [f" {i} " in text for i, text in enumerate(out)] == [True] * 5
    assert sizes == [5, 2, 3, 1, 2]  # halves until a run aligns


@needs_apertium
def test_apertium_strips_unknown_word_marks_unless_asked():
    # catches: '*' marks left in the default output, or -u passed when the marks were asked for
    assert ApertiumTranslator("es", "en").translate(["hotel muy bueno xyzzyq"])[0].endswith(" xyzzyq")
    assert "*xyzzyq" in ApertiumTranslator("es", "en", mark_unknown=True).translate(["hotel muy bueno xyzzyq"])[0]
    assert ApertiumTranslator("es", "en").key != ApertiumTranslator("es", "en", mark_unknown=True).key


@needs_apertium
def test_apertium_errors_name_the_pairs_and_codes():
    # catches: a missing pair or an unknown code failing inside apertium instead of saying what to install
    with pytest.raises(TransferlabError, match="cannot translate en->fr") as info:
        ApertiumTranslator("en", "fr")
    assert "spa-eng" in str(info.value)  # the installed modes are listed
    with pytest.raises(TransferlabError, match="cannot translate en->eu.*Basque->English only"):
        ApertiumTranslator("en", "eu")
    with pytest.raises(TransferlabError, match="unknown language code 'xx'.*ca, de, en, es, eu"):
        ApertiumTranslator("xx", "en")
    assert make_translator("apertium", "es", "en").key.startswith("apertium:spa-eng:")


def test_apertium_missing_program_names_the_package(monkeypatch):
    # catches: a bare FileNotFoundError when apertium is not installed
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TransferlabError, match="apt-get install apertium apertium-eng-cat"):
        ApertiumTranslator("ca", "en")
