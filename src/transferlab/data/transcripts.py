"""Transcripts for speech recognition: a text normaliser (what WER/CER compare) and the character vocabulary of a
CTC model.

:func:`normalize_transcript` puts a reference and a hypothesis into one form before they are compared: lower case,
numbers spelt out (``num2words``: "12" -> "twelve", the way the references of read-speech corpora write them),
punctuation removed (apostrophes inside words kept: "don't"), optional removal of disfluencies ("um", "uh", ...),
whitespace collapsed. Whisper's English normaliser goes the other way (words -> digits); spelling out suits
corpora whose references are words (speechocean762, FSDD's digit names).

:class:`CTCVocabulary` is a Hugging Face ``Wav2Vec2CTCTokenizer`` (characters; id 0 ``<pad>`` is the CTC blank, ``|``
the word delimiter, ``<unk>`` for characters never seen in training): built from the training transcripts, or the
tokenizer of a CTC checkpoint (a folder or hub name with ``vocab.json``), and written next to a run's weights with
``save`` so the model can be used with ``transformers``' processors.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, DataError

DISFLUENCIES = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "ah", "eh", "hmm", "hm", "mm", "mhm", "uhm"})
"""Filled pauses removed by ``normalize_transcript(..., disfluencies=True)``."""

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)(st|nd|rd|th)?(?![\w])")
_KEEP = re.compile(r"[^\w' ]+")


def _spell_number(match: re.Match) -> str:
    try:
        from num2words import num2words
    except ImportError:
        raise DataError("spelling numbers out needs the package num2words: pip install 'transferlab[speech]' (or "
                        "set task.normalize.numbers: false)") from None

    digits, ordinal = match.group(1).replace(",", ""), match.group(2)
    try:
        value = float(digits) if "." in digits else int(digits)
        return " " + num2words(value, to="ordinal" if ordinal and isinstance(value, int) else "cardinal") + " "
    except (ValueError, OverflowError, NotImplementedError):
        return match.group(0)


def normalize_transcript(text: str, *, lowercase: bool = True, numbers: bool = True, punctuation: bool = True,
                         disfluencies: bool = False) -> str:
    """``text`` in the form WER/CER compare: lower case, numbers as words, no punctuation (apostrophes inside
    words kept), optionally no filled pauses (:data:`DISFLUENCIES`), single spaces."""
    text = unicodedata.normalize("NFKC", str(text))
    if numbers:
        text = _NUMBER.sub(_spell_number, text)
    if lowercase:
        text = text.lower()
    if punctuation:
        text = text.replace("-", " ")  # "twenty-one" -> "twenty one"
        text = _KEEP.sub(" ", text)
        text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside a word
    words = text.split()
    if disfluencies:
        words = [w for w in words if w.strip("'") not in DISFLUENCIES]
    return " ".join(words)


class CTCVocabulary:
    """Characters <-> ids for a CTC head; wraps a ``transformers.Wav2Vec2CTCTokenizer``. Id ``blank`` (the tokenizer's
    pad token, 0 when built here) is the CTC blank."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.blank = int(tokenizer.pad_token_id)
        self.delimiter = tokenizer.word_delimiter_token

    @classmethod
    def build(cls, transcripts: Iterable[str]) -> CTCVocabulary:
        """The characters of ``transcripts`` (already normalised), sorted, after ``<pad>`` (blank), ``<unk>``, ``|``."""
        chars = sorted({c for t in transcripts for c in t if c != " "})
        if not chars:
            raise DataError("the training transcripts are empty: a CTC vocabulary needs at least one character")
        if "|" in chars:
            raise DataError("a transcript contains '|', the CTC word delimiter; remove it from the transcripts")
        vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
        return cls._from_vocab(vocab)

    @classmethod
    def _from_vocab(cls, vocab: dict[str, int]) -> CTCVocabulary:
        from transformers import Wav2Vec2CTCTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vocab.json"
            path.write_text(json.dumps(vocab, ensure_ascii=False))
            tokenizer = Wav2Vec2CTCTokenizer(str(path), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
                                             bos_token=None, eos_token=None, do_lower_case=False)
        return cls(tokenizer)

    @classmethod
    def load(cls, name_or_path: str | Path) -> CTCVocabulary:
        """The tokenizer of a CTC checkpoint or of an earlier run (a folder with ``vocab.json``, or a hub name)."""
        from transformers import Wav2Vec2CTCTokenizer

        try:
            return cls(Wav2Vec2CTCTokenizer.from_pretrained(str(name_or_path)))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a CTC vocabulary from '{name_or_path}' ({str(exc).splitlines()[0][:160]}); "
                              f"give a folder with vocab.json (a wav2vec2 CTC checkpoint or a transferlab CTC run), "
                              f"or null to build one from the training transcripts") from None

    def save(self, folder: str | Path) -> None:
        self.tokenizer.save_pretrained(str(folder))

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def tokens(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self))))

    def encode(self, text: str) -> list[int]:
        """Character ids of a normalised transcript (spaces -> the word delimiter)."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids of a label sequence (no CTC collapsing) back to text."""
        return self.tokenizer.decode(list(ids), group_tokens=False, skip_special_tokens=True).strip()

    def decode_ctc(self, ids: Sequence[int]) -> str:
        """A frame-level argmax path to text: repeats merged, blanks dropped (greedy CTC decoding)."""
        # Not skip_special_tokens: it would drop the blanks before repeats are merged ("l <blank> l" -> "l").
        return self.tokenizer.decode(list(ids), group_tokens=True).replace(self.tokenizer.unk_token, "").strip()

    def beam_search(self, log_probs: torch.Tensor, lengths: torch.Tensor, *, beam_size: int = 10,
                    lm: str | None = None, lexicon: str | None = None, lm_weight: float = 2.0,
                    word_score: float = 0.0) -> list[str]:
        """Beam-search decoding of a batch (torchaudio's CTC decoder, on the ``flashlight-text`` package): the most
        probable labelling summed over its alignments, not the best single path. With ``lm`` (a KenLM ``.arpa`` or
        ``.bin`` word n-gram model) and ``lexicon`` (``word<TAB>spelling`` lines, the spelling as characters
        separated by spaces and ending in ``|``), words are scored by the language model (``lm_weight``) and an
        insertion bonus ``word_score``."""
        try:
            from torchaudio.models.decoder import ctc_decoder
        except ImportError as exc:
            raise ConfigError(f"beam search uses torchaudio's CTC decoder, which needs the package flashlight-text "
                              f"({exc}): pip install flashlight-text") from None
        if (lm is None) != (lexicon is None):
            raise ConfigError("a language model needs a lexicon (and a lexicon a language model): give both lm and "
                              "lexicon, or neither (beam search without a language model)")
        key = (beam_size, lm, lexicon, lm_weight, word_score)
        if getattr(self, "_decoder_key", None) != key:
            tokens = self.tokens
            self._decoder = ctc_decoder(lexicon=lexicon, tokens=tokens, lm=lm, nbest=1, beam_size=beam_size,
                                        lm_weight=lm_weight, word_score=word_score,
                                        blank_token=tokens[self.blank], sil_token=self.delimiter,
                                        unk_word=self.tokenizer.unk_token, log_add=True)
            self._decoder_key = key
        hypotheses = self._decoder(log_probs.float().cpu().contiguous(), lengths.cpu().to(torch.int32))
        out = []
        for best in hypotheses:
            if not best:
                out.append("")
            elif lexicon is not None:
                out.append(" ".join(best[0].words))
            else:  # the token path, without its word delimiters at the ends (repeats and blanks already removed)
                ids = [i for i in best[0].tokens.tolist() if i != self.blank]
                out.append(self.decode(ids).strip())
        return out

    def greedy(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Greedy decoding of a batch: ``log_probs`` (B, T, V), valid frames per row ``lengths`` (B,)."""
        best = log_probs.argmax(-1).cpu()
        return [self.decode_ctc(best[i, : int(n)].tolist()) for i, n in enumerate(lengths.cpu())]


def transcripts_of(dataset, field: str) -> list[str]:
    """The raw transcripts of a dataset: an extras column (``text``), or ``label`` for the class names of a set whose
    label is the word spoken (FSDD: the digit, spelt out by the normaliser)."""
    if field == "label":
        if dataset.y is None:
            raise DataError(f"{dataset.name}/{dataset.part} has no labels to use as transcripts (task.text: label)")
        names = dataset.classes
        return [names[int(i)] if names else str(int(i)) for i in dataset.y]
    column = dataset.extras.get(field)
    if column is None or getattr(column, "ndim", 0) != 1 or len(column) != len(dataset):
        available = sorted(k for k, v in dataset.extras.items() if getattr(v, "ndim", 0) == 1 and len(v) == len(dataset))
        raise DataError(f"{dataset.name}/{dataset.part} has no per-utterance column '{field}' for transcripts; "
                        f"it has {available or 'none'}; set task.text to one of them, or to 'label'")
    return [str(t) for t in column]
