"""Aligned cross-lingual word embeddings: load, align (Procrustes + CSLS refinement), evaluate, train.

Follows MUSE (Conneau, Lample, Ranzato, Denoyer & Jégou, "Word Translation Without Parallel Data",
ICLR 2018, arXiv:1710.04087):

* :func:`procrustes` — the orthogonal map W = U Vᵀ, U Σ Vᵀ = SVD(XᵀY), that minimises ‖XW − Y‖_F
  (Schönemann 1966; Xing et al. 2015; Smith et al. 2017). Rows are words: a source vector x maps to xW.
* :func:`csls_scores` — cross-domain similarity local scaling (Conneau et al. 2018, eq. 6):
  CSLS(Wx, y) = 2 cos(Wx, y) − r_T(Wx) − r_S(y), with r_T(Wx) the mean cosine of Wx to its k nearest
  targets and r_S(y) the mean cosine of y to its k nearest mapped sources.
* :func:`align` — Procrustes on a seed dictionary, then MUSE's iterative refinement: induce a dictionary
  from mutual CSLS nearest neighbours among the ``max_rank`` most frequent words and refit.
* :func:`bli_precision` — bilingual lexicon induction precision@k (MUSE convention: a source word is
  correct if any of its gold translations is among its top k).

Vectors are rows of a float32 numpy array; the heavy steps run in torch (optionally on a GPU via
``device``), batched so that neither a 20k × 20k similarity matrix nor the kNN search of a 200k
vocabulary needs more than a few hundred MB at a time.
"""

from __future__ import annotations

import gzip
import logging
import re
import struct
import time
import unicodedata
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, TransferlabError

log = logging.getLogger(__name__)

FASTTEXT_MAGIC = 793712314  # int32 at the start of a fastText native .bin model (fastText/src/fasttext.h)
_SIM_ELEMENTS = 1 << 26  # similarity entries per batch (256 MB of float32)
_ABS_SKIP_LIMIT = 10  # default max_skipped in load_vectors

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------------
# Word vectors
# --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class WordVectors:
    """Words and their vectors, row i of ``vectors`` belonging to ``words[i]``.

    File order is kept: for fastText/word2vec files it is frequency order, which :func:`align` relies on
    (``max_rank``). ``index`` maps word → row (the first row for a duplicated word). ``meta`` holds what
    the loader found (format, skipped lines, ...).
    """

    words: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.vectors, torch.Tensor):
            self.vectors = self.vectors.detach().cpu().numpy()
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.words = list(self.words)
        if self.vectors.ndim != 2:
            raise DataError(f"word vectors must be a 2-D (words, dim) array, got shape {self.vectors.shape}")
        if len(self.words) != self.vectors.shape[0]:
            raise DataError(f"{len(self.words)} words but {self.vectors.shape[0]} vectors: they must match")
        self.index = {}
        for i, word in enumerate(self.words):
            self.index.setdefault(word, i)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str | Sequence[str]) -> np.ndarray:
        """The vector of ``word`` (KeyError if unknown), or the (n, D) matrix of a list of words."""
        if isinstance(word, str):
            return self.vectors[self.index[word]]
        return self.vectors[[self.index[w] for w in word]]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, dim {self.dim})"

    def head(self, n: int) -> WordVectors:
        """The ``n`` first (most frequent) words."""
        return WordVectors(self.words[:n], self.vectors[:n], meta={**self.meta, "head": n})

    def normalize(self, ops: str = "renorm,center,renorm") -> WordVectors:
        """A normalised copy. ``ops`` is MUSE's ``--normalize_embeddings``: a comma-separated sequence of
        ``renorm`` (unit L2 norm per word), ``center`` (subtract the mean vector) and ``none``. The default
        "renorm,center,renorm" is Artetxe et al.'s (AAAI 2018) recipe, used by MUSE and VecMap. Zero
        vectors stay zero."""
        v = self.vectors.astype(np.float64)
        for op in (o.strip() for o in ops.split(",") if o.strip()):
            if op == "renorm":
                norms = np.linalg.norm(v, axis=1, keepdims=True)
                v = v / np.where(norms > 0, norms, 1.0)
            elif op == "center":
                v = v - v.mean(axis=0, keepdims=True)
            elif op != "none":
                raise TransferlabError(f"unknown normalisation {op!r} in {ops!r}; use renorm, center or none")
        return WordVectors(self.words, v.astype(np.float32), meta={**self.meta, "normalized": ops})


def _as_wordvectors(wv: WordVectors, what: str) -> WordVectors:
    if not isinstance(wv, WordVectors):
        raise TransferlabError(f"{what} must be a WordVectors (see load_vectors), got {type(wv).__name__}")
    return wv


# --------------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------------

def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"word vector file {path} not found")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a word vector file")
    if path.stat().st_size == 0:
        raise DataError(f"word vector file {path} is empty")


def _sniff_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 4 and struct.unpack("<i", head)[0] == FASTTEXT_MAGIC:
        return "fasttext-bin"
    if head[:2] == b"\x1f\x8b":
        return "text"  # gzip-compressed text (.vec.gz / .txt.gz)
    if path.suffix == ".bin":
        return "word2vec-binary"
    return "text"


def load_vectors(path: str | Path, *, limit: int | None = None, format: str | None = None,
                 max_skipped: int = _ABS_SKIP_LIMIT) -> WordVectors:
    """Load word vectors, detecting the format from the file.

    * ``"text"``: fastText ``.vec`` / word2vec text (``.txt``, also gzipped): an optional header ``N D``, then
      ``word v1 … vD`` per line. A missing header is tolerated (D from the first line). Malformed lines
      (wrong number of values, non-numbers) are skipped and counted in ``meta["skipped"]``; more than
      ``max_skipped`` of them is an error naming the first bad line. A line with more than D + 1 fields
      whose extra fields are not numbers is read as a word containing spaces.
    * ``"word2vec-binary"`` (``.bin`` in the word2vec C format): header line ``N D``, then per word the word,
      a space, D little-endian float32 and an optional newline.
    * ``"fasttext-bin"`` (a fastText native model, recognised by its magic number): read with the
      ``fasttext`` module (pip ``fasttext-wheel``) or gensim's ``load_facebook_vectors``; only the
      vocabulary words are kept (subword vectors of unseen words are not).

    ``limit``: keep the first ``limit`` words (= the most frequent ones in fastText/word2vec files).
    """
    path = Path(path)
    _check_file(path)
    if limit is not None and limit < 1:
        raise TransferlabError(f"limit must be a positive number of words, got {limit}")
    fmt = format or _sniff_format(path)
    if fmt == "text":
        wv = _load_text(path, limit, max_skipped)
    elif fmt == "word2vec-binary":
        wv = _load_word2vec_binary(path, limit)
    elif fmt == "fasttext-bin":
        wv = _load_fasttext_bin(path, limit)
    else:
        raise TransferlabError(f"unknown vector format {format!r}; use 'text', 'word2vec-binary' or 'fasttext-bin'")
    wv.meta.setdefault("format", fmt)
    wv.meta["path"] = str(path)
    duplicates = len(wv.words) - len(wv.index)
    if duplicates:
        wv.meta["duplicates"] = duplicates
        log.warning("%s: %d duplicated words; the first occurrence is used", path, duplicates)
    return wv


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


_FIELD_SEP = re.compile(r"[ \t]+")


def _load_text(path: Path, limit: int | None, max_skipped: int) -> WordVectors:
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    words: list[str] = []
    rows: list[np.ndarray] = []
    skipped: list[tuple[int, str]] = []
    spaced = 0
    header_n = dim = None
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="\n") as f:
        for lineno, line in enumerate(f, start=1):
            parts = _FIELD_SEP.split(line.strip(" \t\r\n"))
            if parts == [""]:
                continue  # blank line
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                header_n, dim = int(parts[0]), int(parts[1])
                if dim < 1:
                    raise DataError(f"{path}: line 1 declares dimension {dim}; expected 'N D' with D ≥ 1")
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise DataError(f"{path}: line {lineno} has no vector values (expected 'word v1 ... vD')")
            if len(parts) < dim + 1:
                skipped.append((lineno, f"expected {dim} values, found {len(parts) - 1}"))
            else:
                word_parts = parts[:-dim]
                if len(word_parts) > 1 and all(_is_float(p) for p in word_parts[1:]):
                    skipped.append((lineno, f"expected {dim} values, found {len(parts) - 1}"))
                    word_parts = []
                if word_parts:
                    try:
                        row = np.array(parts[-dim:], dtype=np.float32)
                    except ValueError:
                        skipped.append((lineno, "values are not all numbers"))
                    else:
                        spaced += len(word_parts) > 1
                        words.append(" ".join(word_parts))
                        rows.append(row)
                        if limit is not None and len(words) >= limit:
                            break
            if len(skipped) > max_skipped:
                first_line, first_why = skipped[0]
                raise DataError(f"{path}: dimension mismatch on line {first_line}: {first_why} "
                                f"(and {len(skipped) - 1} more bad lines, more than max_skipped={max_skipped}); "
                                f"is the header 'N D' right and is this a word-vector text file?")
    if not rows:
        detail = f"; first bad line {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{path}: no word vectors found{detail}")
    meta: dict[str, Any] = {"skipped": len(skipped), "skipped_lines": [n for n, _ in skipped[:100]],
                            "header": header_n is not None}
    if spaced:
        meta["words_with_spaces"] = spaced
    if skipped:
        log.warning("%s: skipped %d malformed lines (first: line %d, %s)", path, len(skipped), *skipped[0])
    if header_n is not None and limit is None and header_n != len(rows) + len(skipped):
        meta["header_count"] = header_n
        log.warning("%s: header says %d words, file has %d lines of vectors", path, header_n,
                    len(rows) + len(skipped))
    return WordVectors(words, np.stack(rows), meta=meta)


def _load_word2vec_binary(path: Path, limit: int | None) -> WordVectors:
    with open(path, "rb") as f:
        header = f.readline()
        try:
            n, dim = (int(t) for t in header.split())
        except ValueError:
            raise DataError(f"{path}: line 1 is {header[:60]!r}, not the word2vec binary header 'N D'") from None
        if n < 0 or dim < 1:
            raise DataError(f"{path}: header declares {n} words of dimension {dim}")
        count = n if limit is None else min(n, limit)
        nbytes = 4 * dim
        words: list[str] = []
        vectors = np.empty((count, dim), dtype=np.float32)
        buf = f.read(1 << 20)
        pos = 0
        for i in range(count):
            while True:  # the word: bytes up to the next space, after an optional newline
                space = buf.find(b" ", pos)
                if space >= 0 and len(buf) - space - 1 >= nbytes:
                    break
                more = f.read(1 << 20)
                if not more:
                    raise DataError(f"{path}: file ends inside word {i + 1} of {n} (truncated, or the dimension "
                                    f"{dim} in the header is wrong)")
                buf, pos = buf[pos:] + more, 0
            word = buf[pos:space].lstrip(b"\n\r")
            if not word or len(word) > 10_000:
                raise DataError(f"{path}: entry {i + 1} has a bad word ({word[:40]!r}); the file does not follow the "
                                f"word2vec binary format with dimension {dim}")
            words.append(word.decode("utf-8", errors="replace"))
            vectors[i] = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
            pos = space + 1 + nbytes
    if count == 0:
        raise DataError(f"{path}: the header declares 0 words")
    return WordVectors(words, vectors, meta={"header": True, "skipped": 0})


def _load_fasttext_bin(path: Path, limit: int | None) -> WordVectors:
    try:
        import fasttext  # type: ignore[import-not-found]
    except ImportError:
        fasttext = None
    if fasttext is not None:
        model = fasttext.load_model(str(path))
        words = list(model.get_words())[:limit]
        vectors = np.stack([model.get_word_vector(w) for w in words]) if words else np.zeros((0, model.get_dimension()))
        return WordVectors(words, vectors, meta={"reader": "fasttext"})
    try:
        from gensim.models.fasttext import load_facebook_vectors
    except ImportError:
        raise TransferlabError(f"{path} is a fastText native .bin model: reading it needs the fastText Python module "
                               f"(pip install fasttext-wheel) or gensim (pip install gensim, or "
                               f"pip install 'transferlab[crosslingual]'); or load the .vec text file of the same "
                               f"vectors instead") from None
    kv = load_facebook_vectors(str(path))
    n = len(kv.index_to_key) if limit is None else min(limit, len(kv.index_to_key))
    return WordVectors(list(kv.index_to_key[:n]), np.asarray(kv.vectors[:n]), meta={"reader": "gensim"})


def save_vectors(wv: WordVectors, path: str | Path, binary: bool = False) -> Path:
    """Write ``wv`` as fastText/word2vec text (``N D`` header, ``word v1 … vD``; 9 significant digits, so
    float32 values round-trip exactly) or, with ``binary=True``, in the word2vec C binary format."""
    wv = _as_wordvectors(wv, "wv")
    path = Path(path)
    bad = next((w for w in wv.words if not w or any(c in w for c in " \t\n\r")), None)
    if bad is not None:
        raise DataError(f"cannot save word {bad!r}: words in vector files must be non-empty and contain no "
                        f"whitespace")
    path.parent.mkdir(parents=True, exist_ok=True)
    if binary:
        with open(path, "wb") as f:
            f.write(f"{len(wv)} {wv.dim}\n".encode())
            for word, row in zip(wv.words, wv.vectors):
                f.write(word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(f"{len(wv)} {wv.dim}\n")
            for word, row in zip(wv.words, wv.vectors):
                f.write(word + " " + " ".join(f"{x:.9g}" for x in row.tolist()) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# Bilingual dictionaries
# --------------------------------------------------------------------------------------------------

class DictionaryPairs(list):
    """A list of (source, target) word pairs with what :func:`read_dictionary` dropped:
    ``read`` (well-formed lines), ``malformed``, ``duplicates``, ``dropped_source`` / ``dropped_target``
    (pairs whose source / target word is not in the vocabulary; a pair missing both counts in both) and
    ``dropped`` (all pairs removed for the vocabularies)."""

    read: int = 0
    malformed: int = 0
    duplicates: int = 0
    dropped: int = 0
    dropped_source: int = 0
    dropped_target: int = 0

    def stats(self) -> dict[str, int]:
        return {"pairs": len(self), "read": self.read, "malformed": self.malformed, "duplicates": self.duplicates,
                "dropped": self.dropped, "dropped_source": self.dropped_source,
                "dropped_target": self.dropped_target}


def read_dictionary(path: str | Path, *, source_vocab: Collection[str] | None = None,
                    target_vocab: Collection[str] | None = None, invert: bool = False,
                    lowercase: bool = False) -> DictionaryPairs:
    """Read a bilingual dictionary: one ``source target`` pair per line, tab-separated (OpeNER/BLSE lexicons;
    then the entries may contain spaces) or whitespace-separated (MUSE). ``invert`` swaps the columns *before*
    the vocabularies are applied (so ``source_vocab`` is always the returned pairs' source side). Duplicates are
    dropped (first kept, file order preserved); pairs whose words are not in the vocabularies (any container
    supporting ``in``, e.g. :class:`WordVectors`) are dropped and counted. Returns a list of pairs with the
    counts as attributes (:class:`DictionaryPairs`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dictionary file {path} not found")
    out = DictionaryPairs()
    seen: set[tuple[str, str]] = set()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip("\r\n")
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
            if len(parts) != 2 or not parts[0] or not parts[1]:
                out.malformed += 1
                continue
            out.read += 1
            src, tgt = (parts[1], parts[0]) if invert else (parts[0], parts[1])
            if lowercase:
                src, tgt = src.lower(), tgt.lower()
            if (src, tgt) in seen:
                out.duplicates += 1
                continue
            seen.add((src, tgt))
            miss_s = source_vocab is not None and src not in source_vocab
            miss_t = target_vocab is not None and tgt not in target_vocab
            if miss_s or miss_t:
                out.dropped += 1
                out.dropped_source += miss_s
                out.dropped_target += miss_t
                continue
            out.append((src, tgt))
    if out.read == 0:
        raise DataError(f"{path}: no 'source target' pairs found ({out.malformed} malformed lines)")
    log.info("%s: %d pairs kept, %d dropped (source OOV %d, target OOV %d), %d duplicates, %d malformed", path,
             len(out), out.dropped, out.dropped_source, out.dropped_target, out.duplicates, out.malformed)
    return out


# --------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------

def procrustes(X: ArrayLike, Y: ArrayLike) -> ArrayLike:
    """The orthogonal W minimising ‖XW − Y‖_F (orthogonal Procrustes, Schönemann 1966):
    W = U Vᵀ with U Σ Vᵀ = SVD(XᵀY). X, Y: (n, D) paired rows. Computed in float64; returns the input's
    kind (numpy or torch) and dtype."""
    if X.shape != Y.shape or X.ndim != 2:
        raise TransferlabError(f"procrustes needs two (n, D) arrays of the same shape, got {tuple(X.shape)} and "
                               f"{tuple(Y.shape)}")
    if X.shape[0] == 0:
        raise TransferlabError("procrustes needs at least one pair")
    if isinstance(X, torch.Tensor) or isinstance(Y, torch.Tensor):
        ref = X if isinstance(X, torch.Tensor) else Y
        Xt = torch.as_tensor(X, device=ref.device).double()
        Yt = torch.as_tensor(Y, device=ref.device).double()
        U, _, Vh = torch.linalg.svd(Xt.T @ Yt)
        return (U @ Vh).to(ref.dtype)
    U, _, Vh = np.linalg.svd(np.asarray(X, dtype=np.float64).T @ np.asarray(Y, dtype=np.float64))
    return (U @ Vh).astype(np.result_type(X.dtype, Y.dtype, np.float32))


def _tensor(a: ArrayLike, device: str | torch.device) -> torch.Tensor:
    return torch.as_tensor(a, device=device).float() if not isinstance(a, torch.Tensor) else a.to(device).float()


def _unit(a: torch.Tensor) -> torch.Tensor:
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _rows_per_batch(n_cols: int, batch_size: int | None) -> int:
    return batch_size or max(1, _SIM_ELEMENTS // max(1, n_cols))


def _knn_mean_cos(queries: torch.Tensor, keys: torch.Tensor, k: int, batch_size: int | None = None) -> torch.Tensor:
    """r(q) = mean cosine of each (unit) query to its k nearest (unit) keys (Conneau et al. 2018, eq. 5)."""
    k = min(k, keys.shape[0])
    out = torch.empty(queries.shape[0], device=queries.device)
    step = _rows_per_batch(keys.shape[0], batch_size)
    for i in range(0, queries.shape[0], step):
        out[i:i + step] = (queries[i:i + step] @ keys.T).topk(k, dim=1).values.mean(dim=1)
    return out


def _csls_top(queries: torch.Tensor, targets: torch.Tensor, k: int, top: int, *, sources: torch.Tensor | None = None,
              method: str = "csls", batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``top`` (scores, target indices) per query under ``method`` ("nn" cosine or "csls"), batched so the
    full query × target matrix is never held. Inputs are unit-normalised mapped queries / targets; ``sources``
    (unit, mapped) is the pool for r_S (default: the queries)."""
    top = min(top, targets.shape[0])
    if method == "csls":
        r_t = _knn_mean_cos(queries, targets, k, batch_size)
        r_s = _knn_mean_cos(targets, queries if sources is None else sources, k, batch_size)
    elif method != "nn":
        raise TransferlabError(f"unknown retrieval method {method!r}; use 'nn' or 'csls'")
    scores = torch.empty(queries.shape[0], top, device=queries.device)
    index = torch.empty(queries.shape[0], top, dtype=torch.long, device=queries.device)
    step = _rows_per_batch(targets.shape[0], batch_size)
    for i in range(0, queries.shape[0], step):
        sims = queries[i:i + step] @ targets.T
        if method == "csls":
            sims = 2 * sims - r_t[i:i + step, None] - r_s[None, :]
        scores[i:i + step], index[i:i + step] = sims.topk(top, dim=1)
    return scores, index


def csls_scores(queries_mapped: ArrayLike, targets: ArrayLike, k: int = 10, *, sources_mapped: ArrayLike | None = None,
                device: str | torch.device = "cpu", batch_size: int | None = None) -> np.ndarray:
    """The (n_queries, n_targets) CSLS matrix of Conneau et al. 2018, eq. 6:

        CSLS(Wx, y) = 2 cos(Wx, y) − r_T(Wx) − r_S(y),

    r_T(Wx) = mean cosine of Wx to its k nearest ``targets``; r_S(y) = mean cosine of y to its k nearest mapped
    sources. The r_S pool is ``sources_mapped`` if given, else ``queries_mapped`` itself: pass *all* mapped source
    vectors there (as MUSE does, whose r_S uses the whole source vocabulary), not just the words being
    translated. Vectors need not be normalised. Computed in row batches of about 2^26 similarities."""
    q = _unit(_tensor(queries_mapped, device))
    t = _unit(_tensor(targets, device))
    s = q if sources_mapped is None else _unit(_tensor(sources_mapped, device))
    r_t = _knn_mean_cos(q, t, k, batch_size)
    r_s = _knn_mean_cos(t, s, k, batch_size)
    out = np.empty((q.shape[0], t.shape[0]), dtype=np.float32)
    step = _rows_per_batch(t.shape[0], batch_size)
    for i in range(0, q.shape[0], step):
        block = 2 * (q[i:i + step] @ t.T) - r_t[i:i + step, None] - r_s[None, :]
        out[i:i + step] = block.cpu().numpy()
    return out


@dataclass
class Alignment:
    """Result of :func:`align`. ``W`` (D, D) orthogonal maps source rows into the target space (x ↦ xW).
    ``dictionaries[r]`` is the dictionary Procrustes was fitted on in round r (0 = the seed pairs found in the
    vocabularies, r ≥ 1 = induced). ``history[r]``: pairs, mean cosine of those pairs after mapping, and MUSE's
    unsupervised model-selection criterion (mean cosine of the CSLS translations of the most frequent 10k source
    words). ``maps[r]`` is round r's W; ``W`` is ``maps[best_round]``."""

    W: np.ndarray
    dictionaries: list[list[tuple[str, str]]]
    history: list[dict[str, float]]
    maps: list[np.ndarray]
    best_round: int

    def map(self, vectors: ArrayLike) -> np.ndarray:
        """Source vectors (n, D) mapped into the target space."""
        v = vectors.detach().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
        return (v.astype(np.float32) @ self.W).astype(np.float32)


def _pairs_to_index(src: WordVectors, tgt: WordVectors,
                    pairs: Iterable[tuple[str, str]]) -> tuple[list[int], list[int], int]:
    s_idx: list[int] = []
    t_idx: list[int] = []
    missing = 0
    seen: set[tuple[int, int]] = set()
    for s, t in pairs:
        if s in src.index and t in tgt.index:
            key = (src.index[s], tgt.index[t])
            if key not in seen:
                seen.add(key)
                s_idx.append(key[0])
                t_idx.append(key[1])
        else:
            missing += 1
    return s_idx, t_idx, missing


def align(src: WordVectors, tgt: WordVectors, seed_pairs: Iterable[tuple[str, str]], *, refine: int = 0,
          csls_k: int = 10, max_rank: int = 15000, select: str = "best", device: str | torch.device = "cpu",
          batch_size: int | None = None) -> Alignment:
    """Supervised alignment of ``src`` onto ``tgt`` as in MUSE's ``supervised.py`` (Conneau et al. 2018, sec. 2):

    1. W = :func:`procrustes` on the seed pairs whose both words are in the vocabularies;
    2. ``refine`` times: induce a dictionary from the *mutual* CSLS nearest neighbours (MUSE ``S2T&T2S``,
       ``csls_knn_{csls_k}``) among the ``max_rank`` most frequent words of each side (= the first rows, file
       order being frequency order) and refit W on it.

    Differences from MUSE, for CPU cost: the CSLS neighbourhoods r_S / r_T of the induction are computed within
    the ``max_rank`` words too (MUSE uses the full vocabularies there). ``select="best"`` (MUSE's behaviour) returns
    the round with the highest unsupervised criterion (mean cosine of the S2T CSLS translations of the 10k most
    frequent source words, MUSE's ``mean_cosine-csls_knn_10-S2T-10000``); ``select="last"`` the final round.
    Embeddings are used as given: normalise them first (:meth:`WordVectors.normalize`) for MUSE's usual setup.
    """
    src, tgt = _as_wordvectors(src, "src"), _as_wordvectors(tgt, "tgt")
    if src.dim != tgt.dim:
        raise DataError(f"source vectors have dimension {src.dim}, target vectors {tgt.dim}: they must match")
    if select not in ("best", "last"):
        raise TransferlabError(f"select must be 'best' or 'last', got {select!r}")
    seed_pairs = list(seed_pairs)
    s_idx, t_idx, missing = _pairs_to_index(src, tgt, seed_pairs)
    if not s_idx:
        raise DataError(f"none of the {len(seed_pairs)} seed pairs has both words in the vocabularies "
                        f"(e.g. {seed_pairs[:3]}); check the language direction and casing")
    X = _tensor(src.vectors, device)
    Y = _tensor(tgt.vectors, device)
    n_s, n_t = min(max_rank, len(src)), min(max_rank, len(tgt))
    Yu = _unit(Y[:n_t])
    n_crit = min(10_000, n_s)
    dictionaries: list[list[tuple[str, str]]] = []
    history: list[dict[str, float]] = []
    maps: list[np.ndarray] = []
    for rnd in range(refine + 1):
        si = torch.as_tensor(s_idx, device=X.device)
        ti = torch.as_tensor(t_idx, device=X.device)
        W = procrustes(X[si], Y[ti])
        dictionaries.append([(src.words[a], tgt.words[b]) for a, b in zip(s_idx, t_idx)])
        XWu = _unit(X[:n_s] @ W)
        pair_cos = (_unit(X[si] @ W) * _unit(Y[ti])).sum(1).mean().item()
        s2t_score, s2t = _csls_top(XWu, Yu, csls_k, 1, batch_size=batch_size)
        crit = (XWu[:n_crit] * Yu[s2t[:n_crit, 0]]).sum(1).mean().item()
        entry = {"round": rnd, "pairs": len(s_idx), "mean_cos_pairs": pair_cos, "criterion": crit}
        if rnd == 0:
            entry["seed_missing"] = missing
        history.append(entry)
        maps.append(W.double().cpu().numpy().astype(np.float32))
        log.info("align round %d: %d pairs, mean cos %.4f, criterion %.4f", rnd, len(s_idx), pair_cos, crit)
        if rnd == refine:
            break
        _, t2s = _csls_top(Yu, XWu, csls_k, 1, batch_size=batch_size)
        s_best = s2t[:, 0]
        mutual = torch.nonzero(t2s[s_best, 0] == torch.arange(n_s, device=X.device)).flatten()
        if mutual.numel() == 0:
            log.warning("align round %d: no mutual CSLS nearest neighbours; stopping refinement", rnd)
            break
        s_idx = mutual.tolist()
        t_idx = s_best[mutual].tolist()
    best = max(range(len(maps)), key=lambda r: history[r]["criterion"]) if select == "best" else len(maps) - 1
    return Alignment(W=maps[best], dictionaries=dictionaries, history=history, maps=maps, best_round=best)


def _resolve_map(W: ArrayLike | Alignment | None, dim: int) -> np.ndarray | None:
    if W is None:
        return None
    if isinstance(W, Alignment):
        W = W.W
    W = W.detach().cpu().numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
    if W.shape != (dim, dim):
        raise DataError(f"the map W has shape {W.shape}; expected ({dim}, {dim}) for {dim}-dimensional vectors")
    return W.astype(np.float32)


def translate_words(words: Sequence[str], src: WordVectors, tgt: WordVectors, W: ArrayLike | Alignment | None = None,
                    *, method: str = "nn", k: int = 5, csls_k: int = 10, device: str | torch.device = "cpu",
                    batch_size: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """The ``k`` best translations of each source word as ``[(target word, score), ...]``, best first: ``"nn"``
    ranks by cosine of xW to y, ``"csls"`` by CSLS (r_S over all mapped source vectors, as in
    :func:`csls_scores`). A word not in ``src`` gets ``[]``. ``W=None`` means the identity (already aligned)."""
    src, tgt = _as_wordvectors(src, "src"), _as_wordvectors(tgt, "tgt")
    Wn = _resolve_map(W, src.dim)
    known = [w for w in dict.fromkeys(words) if w in src.index]
    out: dict[str, list[tuple[str, float]]] = {w: [] for w in words}
    if not known:
        return out
    S = _tensor(src.vectors if Wn is None else src.vectors @ Wn, device)
    Su = _unit(S)
    T = _unit(_tensor(tgt.vectors, device))
    q = Su[torch.as_tensor([src.index[w] for w in known], device=Su.device)]
    scores, index = _csls_top(q, T, csls_k, k, sources=Su, method=method, batch_size=batch_size)
    for w, sc, ix in zip(known, scores.cpu().tolist(), index.cpu().tolist()):
        out[w] = [(tgt.words[j], float(s)) for s, j in zip(sc, ix)]
    return out


def bli_precision(src: WordVectors, tgt: WordVectors, W: ArrayLike | Alignment | None,
                  test_pairs: Iterable[tuple[str, str]], ks: Sequence[int] = (1, 5), method: str = "csls", *,
                  csls_k: int = 10, device: str | torch.device = "cpu",
                  batch_size: int | None = None) -> dict[str, float]:
    """Bilingual lexicon induction precision@k (MUSE's ``word_translation`` evaluation, Conneau et al. 2018,
    sec. 4.1): a source word is correct at k if any of its gold translations is among its top k retrieved target
    words (``method`` "nn" or "csls", r_S over all mapped source vectors).

    As in MUSE, only test pairs with both words in the vocabularies are kept, and precision is over the unique
    source words left (``n_evaluated``). ``coverage`` = n_evaluated / n_test_sources (unique source words of
    ``test_pairs``); ``n_source_in_vocab`` counts test source words in ``src`` whatever their targets. Returns
    ``{"p@1": ..., "p@5": ..., "coverage", "n_test_sources", "n_source_in_vocab", "n_evaluated"}`` (fractions).
    """
    src, tgt = _as_wordvectors(src, "src"), _as_wordvectors(tgt, "tgt")
    test_pairs = list(test_pairs)
    gold: dict[str, set[int]] = {}
    for s, t in test_pairs:
        if s in src.index and t in tgt.index:
            gold.setdefault(s, set()).add(tgt.index[t])
    test_sources = set(s for s, _ in test_pairs)
    result: dict[str, float] = {
        "n_test_sources": len(test_sources),
        "n_source_in_vocab": sum(s in src.index for s in test_sources),
        "n_evaluated": len(gold),
        "coverage": len(gold) / len(test_sources) if test_sources else 0.0,
    }
    if not gold:
        log.warning("bli_precision: no test pair has both words in the vocabularies")
        return {**{f"p@{k}": float("nan") for k in ks}, **result}
    ranking = translate_words(list(gold), src, tgt, W, method=method, k=max(ks), csls_k=csls_k, device=device,
                              batch_size=batch_size)
    for k in ks:
        hits = sum(any(tgt.index[t] in gold[s] for t, _ in ranking[s][:k]) for s in gold)
        result[f"p@{k}"] = hits / len(gold)
    return result


# --------------------------------------------------------------------------------------------------
# Sentence vectors
# --------------------------------------------------------------------------------------------------

def _strip_punct(token: str) -> str:
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in "PS":
        end -= 1
    return token[start:end]


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Whitespace tokens with surrounding punctuation and symbols (Unicode categories P*, S*) stripped;
    tokens that are only punctuation are dropped. Inner punctuation stays (``don't``, ``e-mail``)."""
    tokens = (_strip_punct(t) for t in text.split())
    return [t.lower() if lowercase else t for t in tokens if t]


def sentence_vectors(texts: Sequence[str], wv: WordVectors, W: ArrayLike | Alignment | None = None, *,
                     lowercase: bool = True, return_stats: bool = False
                     ) -> np.ndarray | tuple[np.ndarray, dict[str, float]]:
    """(N, D) float32 sentence vectors: the mean of the (mapped, x ↦ xW) vectors of each text's in-vocabulary
    tokens (:func:`tokenize`); a text without known tokens gets zeros. With ``lowercase`` a token is looked up
    lowercased first, then as written. With ``return_stats`` also returns ``{"tokens", "oov_tokens", "oov_rate",
    "empty"}`` (empty = texts without a known token)."""
    wv = _as_wordvectors(wv, "wv")
    Wn = _resolve_map(W, wv.dim)
    out = np.zeros((len(texts), wv.dim), dtype=np.float32)
    n_tokens = n_oov = n_empty = 0
    for i, text in enumerate(texts):
        rows = []
        for tok in tokenize(text, lowercase=False):
            n_tokens += 1
            candidates = (tok.lower(), tok) if lowercase else (tok,)
            row = next((wv.index[c] for c in candidates if c in wv.index), None)
            if row is None:
                n_oov += 1
            else:
                rows.append(row)
        if rows:
            out[i] = wv.vectors[rows].mean(axis=0)
        else:
            n_empty += 1
    if Wn is not None:
        out = out @ Wn
    if not return_stats:
        return out
    return out, {"tokens": n_tokens, "oov_tokens": n_oov, "oov_rate": n_oov / n_tokens if n_tokens else 0.0,
                 "empty": n_empty}


# --------------------------------------------------------------------------------------------------
# Training vectors
# --------------------------------------------------------------------------------------------------

def _stable_hash(text: str) -> int:
    """Hash for gensim's per-word seeding that, unlike ``hash``, does not change with PYTHONHASHSEED."""
    return zlib.crc32(text.encode("utf-8"))


def train_vectors(texts: Iterable[str], path: str | Path, *, dim: int = 100, epochs: int = 10, min_count: int = 2,
                  seed: int = 0, method: str = "fasttext", lowercase: bool = True, window: int = 5,
                  sg: bool = True) -> dict[str, Any]:
    """Train word vectors on ``texts`` (tokenised with :func:`tokenize`) and write them as a ``.vec`` text file
    at ``path``, most frequent word first. ``method``: ``"fasttext"`` (gensim's FastText: skip-gram with character
    n-grams 3-6, Bojanowski et al., TACL 2017) or ``"word2vec"`` (gensim's Word2Vec). ``sg=False`` uses CBOW.
    One worker thread and ``seed``: the same input gives the same file.

    Returns ``{"sentences", "tokens", "types", "vocab" (words kept, count ≥ min_count), "path", "seconds"}``.
    Needs gensim (``pip install gensim`` or ``pip install 'transferlab[crosslingual]'``)."""
    try:
        from gensim.models import FastText, Word2Vec
    except ImportError:
        raise TransferlabError("train_vectors needs gensim: pip install gensim (or pip install "
                               "'transferlab[crosslingual]')") from None
    if method not in ("fasttext", "word2vec"):
        raise TransferlabError(f"unknown training method {method!r}; use 'fasttext' or 'word2vec'")
    sentences = [toks for toks in (tokenize(t, lowercase=lowercase) for t in texts) if toks]
    counts = Counter(tok for toks in sentences for tok in toks)
    if not any(c >= min_count for c in counts.values()):
        raise DataError(f"no word occurs at least min_count={min_count} times in the {len(sentences)} non-empty "
                        f"texts: nothing to train on")
    start = time.perf_counter()
    cls = FastText if method == "fasttext" else Word2Vec
    model = cls(sentences=sentences, vector_size=dim, window=window, min_count=min_count, epochs=epochs,
                seed=seed, workers=1, sg=int(sg), hashfxn=_stable_hash)
    path = save_vectors(WordVectors(list(model.wv.index_to_key), np.asarray(model.wv.vectors)), path)
    stats = {"sentences": len(sentences), "tokens": sum(counts.values()), "types": len(counts),
             "vocab": len(model.wv.index_to_key), "path": str(path),
             "seconds": round(time.perf_counter() - start, 3), "method": method, "backend": "gensim"}
    log.info("train_vectors: %s", stats)
    return stats


__all__ = [
    "Alignment", "DictionaryPairs", "WordVectors", "align", "bli_precision", "csls_scores", "load_vectors",
    "procrustes", "read_dictionary", "save_vectors", "sentence_vectors", "tokenize", "train_vectors",
    "translate_words",
]
