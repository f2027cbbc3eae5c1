"""Machine translation for cross-lingual text transfer: translate-test (target-language text -> the source language,
then the source-language model) and translate-train (source training text -> the target language).

Every back-end is a :class:`Translator`: a ``key`` that names everything that changes its output (back-end, language
pair, model or lexicon content, options) and ``translate(texts) -> texts`` (same length and order; empty and
whitespace-only strings come back unchanged and never reach the back-end).

* :class:`ApertiumTranslator`: the Apertium rule-based engine through its ``apertium`` program (Debian packages
  ``apertium-eng-spa``, ``apertium-eng-cat``, ``apertium-eu-en``); a whole list in one process.
* :class:`DictionaryTranslator`: word by word over a bilingual lexicon (the OpeNER/BLSE lexicons, MUSE).
* :class:`HFSeq2SeqTranslator`: a Hugging Face seq2seq checkpoint (Marian style), batched ``generate``.

:class:`CachedTranslator` (or :func:`cached`) keeps translations in a SQLite file (:class:`TranslationCache`) so each
text is translated once per key, across runs and processes; :func:`make_translator` builds a back-end from a spec
string (``apertium``, ``dictionary:<lexicon>``, ``hf:<model>``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

from .modality import cache_dir
from .root import data_root as resolve_data_root
from ..errors import DataError, TransferlabError

PathLike = str | os.PathLike


@runtime_checkable
class Translator(Protocol):
    """A translation back-end. ``key`` identifies everything that changes the output (it is the cache key);
    ``translate`` returns one translation per text, in order, with empty strings left empty."""

    key: str

    def translate(self, texts: list[str]) -> list[str]: ...


def _blank(text: str) -> bool:
    return not text.strip()


# --- Apertium ---------------------------------------------------------------------------------------------------

# ISO-639-1 code -> the names Apertium mode files use for it (three-letter ISO-639-3 first, as newer pairs do).
APERTIUM_LANGUAGES: dict[str, tuple[str, ...]] = {
    "en": ("eng", "en"), "es": ("spa", "es"), "ca": ("cat", "ca"), "eu": ("eus", "eu"), "fr": ("fra", "fr"),
    "gl": ("glg", "gl"), "pt": ("por", "pt"), "it": ("ita", "it"), "de": ("deu", "de"), "oc": ("oci", "oc"),
}
# The Debian bookworm packages checked to provide a direction (apertium-eu-en is Basque -> English only).
APERTIUM_PACKAGES: dict[tuple[str, str], str] = {
    ("en", "es"): "apertium-eng-spa", ("es", "en"): "apertium-eng-spa",
    ("en", "ca"): "apertium-eng-cat", ("ca", "en"): "apertium-eng-cat",
    ("eu", "en"): "apertium-eu-en",
}
# Appended to every text: what apertium-destxt appends to a document (a period the tagger sees as a sentence end,
# then an empty superblank) and apertium-retxt removes again; here it also marks where each text ends.
_END = ".[]"
_RESERVED = re.compile(r"([\\\[\]^$/@<>{}])")  # the stream format's reserved characters, escaped with a backslash


def _language(code: str) -> str:
    code = code.lower()
    if code in APERTIUM_LANGUAGES:
        return code
    for iso1, names in APERTIUM_LANGUAGES.items():
        if code in names:
            return iso1
    raise TransferlabError(f"unknown language code '{code}' for Apertium: use one of "
                           f"{', '.join(sorted(APERTIUM_LANGUAGES))} (ISO-639-1)")


@functools.lru_cache(maxsize=None)
def apertium_modes(executable: str = "apertium") -> tuple[str, ...]:
    """The translation directions (mode names such as ``spa-eng``) the installed Apertium lists with ``-l``."""
    done = subprocess.run([executable, "-l"], capture_output=True, text=True)
    return tuple(sorted(line.strip() for line in done.stdout.splitlines() if line.strip()))


def _package_versions(packages: Iterable[str]) -> str:
    """``name=version`` of the installed Debian packages, for the key; empty when dpkg is not there to ask."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Package}=${Version}\\n", *packages],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return ",".join(sorted(line for line in done.stdout.split() if "=" in line and not line.endswith("=")))


def _encode(text: str) -> str:
    """One text in Apertium's stream format: reserved characters escaped, line breaks as superblanks (passed
    through untouched), then the end mark and a NUL, which makes every program of the pipeline flush (``-z``)."""
    text = _RESERVED.sub(r"\\\1", text.replace("\0", ""))
    return re.sub(r"[\r\n]+", lambda m: "[" + m.group(0) + "]", text) + _END + "\0"


def _decode(segment: str) -> str:
    """Apertium's stream format back to text: drop the end mark, unescape, keep superblank contents."""
    cut = segment.rfind(_END)
    if cut >= 0:
        segment = segment[:cut] + segment[cut + len(_END):]
    out, i, n = [], 0, len(segment)
    while i < n:
        char = segment[i]
        if char == "\\" and i + 1 < n:
            out.append(segment[i + 1])
            i += 2
            continue
        if char not in "[]":  # superblank brackets go, their contents (a line break, spaces) stay
            out.append(char)
        i += 1
    return "".join(out)


class ApertiumTranslator:
    """The Apertium rule-based MT engine (Forcada et al. 2011) through its command-line program.

    ``source``/``target`` are ISO-639-1 codes, mapped to an installed mode (``es``->``en`` is ``spa-eng``,
    ``eu``->``en`` is ``eu-en``); ``mode`` names one directly (a variant such as ``eng-cat_valencia``).

    A list is translated in one process, in Apertium's null-flush mode (``-z -f none``): each text is encoded as a
    stream segment ending in ``.[]`` and NUL. NUL makes every program of the pipeline flush its state, so no text is
    tagged, reordered or chunked together with its neighbour -- which plain ``-f txt`` does: one sentence per line
    keeps the line count but moves words across lines (``la casa\\nblanca`` -> ``The white\\nhouse``). The output
    must hold one marked segment per text (then only empty ones); if not, the list is split in halves and retried.

    ``mark_unknown=False`` (the default) passes ``-u``: no ``*`` (unknown word), ``#`` (no generation) or ``@`` (not
    in the bilingual dictionary) marks, without guessing which ``*`` or ``#`` was in the text itself.
    """

    def __init__(self, source: str, target: str, *, mark_unknown: bool = False, mode: str | None = None,
                 executable: str = "apertium"):
        self.source, self.target = _language(source), _language(target)
        self.mark_unknown = mark_unknown
        package = APERTIUM_PACKAGES.get((self.source, self.target))
        install = f"apt-get install apertium {package or ''}".rstrip()
        found = shutil.which(executable)
        if found is None:
            raise TransferlabError(f"the Apertium engine is not installed ('{executable}' is not on PATH): on "
                                   f"Debian/Ubuntu run `{install}`")
        self.executable = found
        installed = apertium_modes(found)
        candidates = [mode] if mode else [f"{a}-{b}" for a in APERTIUM_LANGUAGES[self.source]
                                          for b in APERTIUM_LANGUAGES[self.target]]
        chosen = next((name for name in candidates if name in installed), None)
        if chosen is None:
            if package:
                hint = f"the Debian package {package} provides it: `{install}`"
            else:
                basque = " (apertium-eu-en is Basque->English only)" if "eu" in (self.source, self.target) else ""
                hint = (f"no Debian package checked here provides {self.source}->{self.target}{basque}; look with "
                        f"`apt-cache search apertium`")
            raise TransferlabError(f"Apertium cannot translate {self.source}->{self.target}: none of the modes "
                                   f"{', '.join(candidates)} is installed; {hint}. Installed modes: "
                                   f"{', '.join(installed) or 'none'}")
        self.mode = chosen
        versions = _package_versions(["apertium"] + ([package] if package else []))
        self.key = (f"apertium:{self.mode}:{'marks' if mark_unknown else 'nomarks'}"
                    + (f":{versions}" if versions else "") + ":v1")

    def translate(self, texts: list[str]) -> list[str]:
        texts = list(texts)
        todo = [i for i, text in enumerate(texts) if not _blank(text)]
        out = list(texts)
        for i, translation in zip(todo, self._translate_aligned([texts[i] for i in todo])):
            out[i] = translation
        return out

    def _translate_aligned(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        segments = self._run(texts)
        if segments is not None:
            return segments
        if len(texts) == 1:
            raise TransferlabError(f"Apertium ({self.mode}) gave no aligned output for the text {texts[0]!r}")
        half = len(texts) // 2
        return self._translate_aligned(texts[:half]) + self._translate_aligned(texts[half:])

    def _run(self, texts: list[str]) -> list[str] | None:
        """Translate in one process; None when the output does not split into exactly one segment per text."""
        command = [self.executable, "-z", "-f", "none"] + ([] if self.mark_unknown else ["-u"]) + [self.mode]
        done = subprocess.run(command, input="".join(map(_encode, texts)).encode("utf-8"), capture_output=True)
        if done.returncode != 0:
            raise TransferlabError(f"Apertium ({' '.join(command)}) failed with status {done.returncode}: "
                                   f"{done.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        segments = done.stdout.decode("utf-8", "replace").split("\0")
        # Each program flushes once more at the end of input: the tail is empty segments.
        ours, tail = segments[:len(texts)], segments[len(texts):]
        if len(ours) < len(texts) or any(_END not in s for s in ours) or any(s.strip() for s in tail):
            return None
        return [_decode(s) for s in ours]


# --- bilingual lexicons -------------------------------------------------------------------------------------------

_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)  # leading punctuation, the word, trailing punctuation
_WHITESPACE = re.compile(r"(\s+)")
_PAIR_NAME = re.compile(r"^([a-z]{2,3})-([a-z]{2,3})(?![a-z])")  # en-es.txt, es-en.0-5000.derived.txt


def _match_case(source: str, translation: str) -> str:
    """The translation in the shape of the source word: UPPER (two letters or more), Capitalised, or as listed."""
    if sum(c.isalpha() for c in source) > 1 and source.isupper():
        return translation.upper()
    if source[:1].isupper():
        return translation[:1].upper() + translation[1:]
    return translation


def read_lexicon(path: PathLike, *, invert: bool = False) -> list[tuple[str, str]]:
    """``(source, target)`` pairs of a lexicon file, in file order: ``word<TAB>translation`` (the OpeNER/BLSE
    lexicons) or ``word translation`` separated by whitespace (MUSE), plain or ``.gz``; ``invert`` swaps the
    columns (an ``en-xx`` file read for xx->en). Lines with an underscore are skipped: in the Apertium-extracted
    OpeNER lexicons they are extraction residue (``fine_buenoD<TAB>bueno``, ``fan<TAB>aficionado_fanD``; 1,830 lines
    of the three files), which would otherwise be the first translation of common words such as ``bueno``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"lexicon file {path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if len(fields) < 2 or not fields[0].strip() or not fields[1].strip() or "_" in fields[0] + fields[1]:
                continue
            left, right = fields[0].strip(), fields[1].strip()
            pairs.append((right, left) if invert else (left, right))
    return pairs


class DictionaryTranslator:
    """Word-by-word translation over a bilingual lexicon, the translation baseline of the BLSE and MUSE papers.

    ``pairs`` maps a word to its translations (a string or a list) or is one or more lexicon files
    (:meth:`from_files`). Lookup is lowercased; the first translation listed wins (file order, then the order of the
    files), since the lexicons carry no scores to choose by. Source entries with a space in them are dropped: text
    is split at whitespace, so a multi-word entry never meets one token (the Apertium lexicons spell them without
    spaces, ``beabreast``, which then never matches either).

    Text is split at whitespace, which is kept as it was (the OpeNER sentences are tokenised with single spaces, so
    the output is too). A token is looked up whole (``doesn't``, ``2-faces``), then without its leading and trailing
    punctuation (``great!`` -> ``genial!``, ``¡Genial!``); a punctuation token or an unknown word is kept unchanged.
    The translation takes the case shape of the source word (``Hotel`` -> ``Hotel``, ``GOOD`` -> ``BUENO``).
    """

    def __init__(self, pairs: Mapping[str, str | Sequence[str]] | PathLike | Sequence[PathLike], source: str,
                 target: str, *, invert: bool | None = None):
        self.source, self.target = source, target
        if isinstance(pairs, Mapping):
            items: Iterable[tuple[str, str]] = (
                (word, options if isinstance(options, str) else next(iter(options), ""))
                for word, options in pairs.items())
        else:
            paths = [pairs] if isinstance(pairs, (str, os.PathLike)) else list(pairs)
            items = [pair for path in paths for pair in read_lexicon(path, invert=self._inverted(path, invert))]
        self.table: dict[str, str] = {}
        for word, translation in items:
            word = word.strip().lower()
            if word and translation and not any(c.isspace() for c in word):
                self.table.setdefault(word, translation)
        if not self.table:
            raise DataError(f"the {source}->{target} lexicon has no usable entries")
        digest = hashlib.sha256(json.dumps(self.table, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        self.key = f"dictionary:{source}-{target}:sha256={digest.hexdigest()[:16]}:v1"

    @classmethod
    def from_files(cls, paths: PathLike | Sequence[PathLike], source: str, target: str, *,
                   invert: bool | None = None) -> DictionaryTranslator:
        """A lexicon from one or more files; ``invert=None`` reads a file named ``<target>-<source>...``
        (``en-es.txt`` for es->en) inverted and any other file as ``source<sep>target``."""
        return cls(paths, source, target, invert=invert)

    def _inverted(self, path: PathLike, invert: bool | None) -> bool:
        if invert is not None:
            return invert
        named = _PAIR_NAME.match(Path(path).name)
        return bool(named) and named.groups() == (self.target, self.source) and self.source != self.target

    def translate(self, texts: list[str]) -> list[str]:
        return [self._sentence(text) for text in texts]

    def _sentence(self, text: str) -> str:
        return "".join(piece if not piece or piece.isspace() else self._token(piece)
                       for piece in _WHITESPACE.split(text))

    def _token(self, token: str) -> str:
        whole = self.table.get(token.lower())
        if whole is not None:
            return _match_case(token, whole)
        lead, word, trail = _EDGES.match(token).groups()
        if word and (lead or trail):
            found = self.table.get(word.lower())
            if found is not None:
                return lead + _match_case(word, found) + trail
        return token


# --- Hugging Face seq2seq ---------------------------------------------------------------------------------------


def _folder_fingerprint(folder: Path) -> str:
    """sha256 of every file's relative name and content: a retrained model in the same folder is a new key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _hub_revision(name: str) -> str | None:
    """The commit of a hub model already in the local Hugging Face cache (its snapshot folder), without loading."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id, or an old huggingface_hub: the key then comes from the loaded model
        return None
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    return None


class HFSeq2SeqTranslator:
    """A Hugging Face seq2seq checkpoint (Marian style: the tokenizer's input is the source sentence, generation
    starts from the model's own decoder start token), through ``AutoTokenizer`` and ``AutoModelForSeq2SeqLM``.

    Texts are sorted by length and translated ``batch_size`` at a time (less padding), then put back in order;
    ``max_length`` bounds both the tokenised input and the generated output. The model loads on first use, so a
    fully cached list never loads it. The key holds the content hash of a local folder, or the hub commit.
    """

    def __init__(self, name_or_path: str, *, batch_size: int = 32, max_length: int = 256, num_beams: int = 1,
                 device: str = "cpu"):
        local = Path(name_or_path).expanduser()
        self.name_or_path = str(local.resolve()) if local.is_dir() else name_or_path
        self.batch_size, self.max_length, self.num_beams, self.device = batch_size, max_length, num_beams, device
        self._loaded = None
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            local = Path(self.name_or_path)
            if local.is_dir():  # by content, not by place: a copied folder keeps its translations
                name, revision = local.name, "sha256=" + _folder_fingerprint(local)
            else:
                name, revision = self.name_or_path, _hub_revision(self.name_or_path)
                if revision is None:
                    revision = getattr(self._load()[1].config, "_commit_hash", None) or "unversioned"
            self._key = f"hf:{name}@{revision}:beams={self.num_beams}:max_length={self.max_length}:v1"
        return self._key

    def _load(self):
        if self._loaded is None:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            looks_local = self.name_or_path.startswith((".", "/", "~"))
            if looks_local and not Path(self.name_or_path).expanduser().is_dir():
                raise TransferlabError(f"translation model folder '{self.name_or_path}' not found: give a folder "
                                       f"with config.json, the weights and the tokenizer files (save_pretrained)")

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
                model = AutoModelForSeq2SeqLM.from_pretrained(self.name_or_path)
            except (OSError, ValueError, KeyError) as exc:
                offline = " (HF_HUB_OFFLINE is set: nothing is downloaded)" if os.environ.get("HF_HUB_OFFLINE") else ""
                raise TransferlabError(
                    f"cannot load the translation model '{self.name_or_path}'{offline}: "
                    f"{(str(exc).splitlines() or [type(exc).__name__])[0]}. Give a local folder with config.json, the "
                    f"weights and the tokenizer files (save_pretrained), or a hub name of a seq2seq model "
                    f"(e.g. Helsinki-NLP/opus-mt-es-en) that is in the Hugging Face cache") from None
            self._loaded = (tokenizer, model.to(self.device).eval())
        return self._loaded

    def translate(self, texts: list[str]) -> list[str]:
        import torch

        out = list(texts)
        todo = sorted((i for i, text in enumerate(texts) if not _blank(text)), key=lambda i: -len(texts[i]))
        if not todo:
            return out
        tokenizer, model = self._load()
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                inputs = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_length).to(self.device)
                inputs.pop("token_type_ids", None)
                generated = model.generate(**inputs, max_length=self.max_length, num_beams=self.num_beams)
                for i, translation in zip(batch, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = translation.strip()
        return out


# --- the cache ----------------------------------------------------------------------------------------------------


class TranslationCache:
    """Translations kept in SQLite, keyed by (translator key, source text); default
    ``cache_dir()/translations.sqlite`` (``$TRANSFERLAB_CACHE``). Each read or write is one transaction on a
    connection of its own in WAL mode, so several processes can share the file (writers wait up to ``timeout``)."""

    _CHUNK = 500  # texts per query: below SQLite's limit on bound parameters in every version

    def __init__(self, path: PathLike | None = None, *, timeout: float = 60.0):
        self.path = Path(path) if path is not None else cache_dir() / "translations.sqlite"
        self.timeout = timeout

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.timeout)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE IF NOT EXISTS translations (key TEXT NOT NULL, source TEXT NOT NULL, "
                               "translation TEXT NOT NULL, PRIMARY KEY (key, source)) WITHOUT ROWID")
        except (OSError, sqlite3.Error) as exc:
            raise TransferlabError(f"cannot open the translation cache {self.path}: {exc}. Set TRANSFERLAB_CACHE "
                                   f"to a writable folder") from None
        return connection

    def get(self, key: str, texts: Sequence[str]) -> dict[str, str]:
        """The cached translations of those ``texts`` that have one, as ``{text: translation}``."""
        texts = list(dict.fromkeys(texts))
        found: dict[str, str] = {}
        with closing(self._connect()) as connection:
            for start in range(0, len(texts), self._CHUNK):
                chunk = texts[start:start + self._CHUNK]
                rows = connection.execute(
                    f"SELECT source, translation FROM translations WHERE key = ? AND source IN "
                    f"({', '.join('?' * len(chunk))})", [key, *chunk])
                found.update(rows)
        return found

    def put(self, key: str, translations: Mapping[str, str]) -> None:
        """Store ``{text: translation}`` under ``key`` in one transaction (a text already there is replaced)."""
        with closing(self._connect()) as connection, connection:
            connection.executemany("INSERT OR REPLACE INTO translations (key, source, translation) VALUES (?, ?, ?)",
                                   [(key, text, translation) for text, translation in translations.items()])

    def __len__(self) -> int:
        with closing(self._connect()) as connection:
            return connection.execute("SELECT COUNT(*) FROM translations").fetchone()[0]


class CachedTranslator:
    """A translator whose results go through a :class:`TranslationCache`: the texts of a call that are not cached
    under ``translator.key`` (each distinct text once) go to the back-end in one call, and are stored."""

    def __init__(self, translator: Translator, cache: TranslationCache | None = None):
        self.translator = translator
        self.cache = cache if cache is not None else TranslationCache()

    @property
    def key(self) -> str:
        return self.translator.key

    def translate(self, texts: list[str]) -> list[str]:
        texts = list(texts)
        distinct = list(dict.fromkeys(text for text in texts if not _blank(text)))
        if not distinct:
            return texts
        key = self.key
        found = self.cache.get(key, distinct)
        missing = [text for text in distinct if text not in found]
        if missing:
            translations = list(self.translator.translate(missing))
            if len(translations) != len(missing):
                raise TransferlabError(f"translator {key} returned {len(translations)} translations for "
                                       f"{len(missing)} texts")
            new = dict(zip(missing, translations))
            self.cache.put(key, new)
            found.update(new)
        return [found[text] if not _blank(text) else text for text in texts]


def cached(translator: Translator, cache: TranslationCache | None = None) -> CachedTranslator:
    """``translator`` behind the persistent translation cache (default file: see :class:`TranslationCache`)."""
    return translator if isinstance(translator, CachedTranslator) else CachedTranslator(translator, cache)


# --- specs --------------------------------------------------------------------------------------------------------

SPEC_FORMS = ("apertium", "apertium:<mode>", "dictionary:<lexicon file(s), comma-separated>",
              "dictionary:opener-apertium", "dictionary:opener-bingliu", "dictionary:opener-human", "dictionary:muse",
              "hf:<model folder or hub name>")


def named_lexicon(name: str, source: str, target: str, root: Path) -> tuple[list[Path], bool]:
    """The files and direction of a lexicon given by name, under the data root."""
    if name.startswith("opener-"):
        if "en" not in (source, target) or source == target:
            raise DataError(f"the OpeNER lexicons pair English with es, ca or eu; {source}->{target} is not one")
        other = target if source == "en" else source
        kind = name[len("opener-"):]
        folder = root / "opener_sentiment" / "lexicons"
        paths = {"apertium": folder / "apertium" / f"en-{other}.txt", "bingliu": folder / "bingliu" / f"en-{other}.txt",
                 "human": folder / "human_translated" / f"en-{other}-handmade-sentiment-lexicon-expanded.txt"}
        if kind not in paths:
            raise DataError(f"unknown OpeNER lexicon '{name}': use opener-apertium, opener-bingliu or opener-human")
        if not paths[kind].is_file():
            raise DataError(f"lexicon {paths[kind]} not found: the {name} lexicon has no en-{other} file, or the "
                            f"data root {root} lacks opener_sentiment (set TRANSFERLAB_DATA or --data-root)")
        return [paths[kind]], source != "en"
    folder = root / "muse_dictionaries"
    for pair, invert in ((f"{source}-{target}", False), (f"{target}-{source}", True)):
        if (folder / f"{pair}.txt.gz").is_file():
            return [folder / f"{pair}.txt.gz"], invert
    present = sorted(p.name[:-len(".txt.gz")] for p in folder.glob("*.txt.gz")) if folder.is_dir() else []
    raise DataError(f"no MUSE dictionary for {source}->{target} under {folder} (the full dictionaries "
                    f"<src>-<tgt>.txt.gz; present: {', '.join(present) or 'none'})")


def make_translator(spec: str, source: str, target: str, *, data_root: PathLike | None = None) -> Translator:
    """A translator from a spec: ``apertium`` (or ``apertium:<mode>``), ``dictionary:<lexicon>`` (a file, files
    separated by commas, or a name resolved under the data root: ``opener-apertium``, ``opener-bingliu``,
    ``opener-human`` (the OpeNER/BLSE en-xx lexicons, read inverted for xx->en), ``muse`` (the full MUSE
    dictionary of the pair)), or ``hf:<model folder or hub name>``. Wrap it in :func:`cached` to reuse
    translations across runs."""
    kind, _, argument = spec.partition(":")
    kind, argument = kind.strip().lower(), argument.strip()
    if kind == "apertium":
        return ApertiumTranslator(source, target, mode=argument or None)
    if kind == "hf" and argument:
        return HFSeq2SeqTranslator(argument)
    if kind == "dictionary" and argument:
        root = resolve_data_root(data_root)
        if argument in ("muse",) or argument.startswith("opener-"):
            paths, invert = named_lexicon(argument, source, target, root)
            return DictionaryTranslator.from_files(paths, source, target, invert=invert)
        paths = []
        for name in (part.strip() for part in argument.split(",") if part.strip()):
            path = Path(name).expanduser()
            if not path.is_file() and not path.is_absolute() and (root / path).is_file():
                path = root / path
            if not path.is_file():
                raise DataError(f"lexicon file '{name}' not found (looked in the working folder and under the data "
                                f"root {root})")
            paths.append(path)
        return DictionaryTranslator.from_files(paths, source, target)
    raise TransferlabError(f"unknown translator spec '{spec}': use one of {', '.join(SPEC_FORMS)}")
