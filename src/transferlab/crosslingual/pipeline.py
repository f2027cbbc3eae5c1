"""Cross-lingual transfer with aligned word embeddings, end to end (scenario 4, approach 4): word vectors per
language (given, or trained with fastText on the unlabelled text available), an orthogonal map of the target
language's vectors onto the source language's (Procrustes on a seed dictionary, optional refinement), bilingual
lexicon induction as a check of the map, and a classifier on averaged word vectors trained on labelled
source-language sentences and applied to mapped target-language sentences. No target label is used for training
or selection: the target test labels only score the result.

The classifier is scikit-learn's ``LogisticRegression`` on the fixed sentence vectors (a convex problem with one
solution; the linear classifier the BLSE paper's projection baselines use), not a network through the engine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .. import data as tl_data
from ..data.datasets import select_classes
from ..data.translate import named_lexicon
from ..engine.checkpoint import atomic_write_json
from ..engine.metrics import classification_metrics, confusion_matrix
from ..errors import DataError
from .embeddings import WordVectors, align, bli_precision, load_vectors, read_dictionary, sentence_vectors, train_vectors

CLASS_VIEWS = {"binary": [[0, 1], [2, 3]], "4class": [0, 1, 2, 3], "all": None}
"""OpeNER label views: BLSE's binary (strong/weak negative vs positive) and 4-class settings (both drop 'mixed')."""


def texts_of(spec: str, root: str | Path | None = None) -> list[str]:
    """The sentences of ``DATASET:PART[,PART...]`` (text datasets; labels are not read)."""
    name, _, parts = spec.partition(":")
    if not parts:
        raise DataError(f"'{spec}': give DATASET:PART[,PART...], e.g. opener_sentiment:es_train,es_dev")
    texts: list[str] = []
    for part in parts.split(","):
        dataset = tl_data.load(name, part, root)
        if getattr(dataset, "texts", None) is None:
            raise DataError(f"{name}/{part} holds {dataset.kind} data, not text")
        texts += dataset.texts
    return texts


def language_vectors(dataset: str, language: str, folder: Path, *, root=None, dim: int = 100, epochs: int = 10,
                     min_count: int = 2, seed: int = 0) -> tuple[WordVectors, dict[str, Any]]:
    """fastText vectors for ``language`` trained on the unlabelled train + dev sentences of ``dataset`` (parts
    ``<lang>_train``, ``<lang>_dev``), written once to ``folder`` and reused while the text and settings match."""
    texts = texts_of(f"{dataset}:{language}_train,{language}_dev", root)
    key = hashlib.sha256(json.dumps([texts, dim, epochs, min_count, seed]).encode()).hexdigest()[:12]
    path = folder / f"{dataset}.{language}.{key}.vec"
    stats_path = path.with_suffix(".json")
    if not (path.is_file() and stats_path.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        stats = train_vectors(texts, path, dim=dim, epochs=epochs, min_count=min_count, seed=seed)
        atomic_write_json(stats_path, {k: (str(v) if isinstance(v, Path) else v) for k, v in stats.items()})
    return load_vectors(path).normalize(), json.loads(stats_path.read_text())


def seed_dictionary(spec: str, source: str, target: str, root: Path) -> tuple[Path, bool]:
    """A seed dictionary file for mapping ``target`` words to ``source`` words, and whether to invert its columns:
    ``muse`` (MUSE's 0-5000 training split; ``muse-test``: its 5000-6500 test split), ``opener-apertium`` / ``opener-bingliu`` (the OpeNER lexicons), or a
    file of ``target source`` pairs."""
    if spec in ("muse", "muse-test"):
        folder = root / "muse_dictionaries"
        split = "0-5000" if spec == "muse" else "5000-6500"
        for name, invert in ((f"{target}-{source}.{split}.derived.txt", False),
                             (f"{source}-{target}.{split}.derived.txt", True)):
            if (folder / name).is_file():
                return folder / name, invert
        raise DataError(f"no MUSE {split} dictionary for {target}-{source} under {folder}; use "
                        f"--dictionary opener-apertium (en-es/ca/eu) or a file")
    if spec.startswith("opener-"):
        paths, invert = named_lexicon(spec, target, source, root)
        return paths[0], invert
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"seed dictionary {spec} not found: give muse, opener-apertium, opener-bingliu or a file")
    return path, False


def aligned_classifier(source: str, target: str, *, dataset: str = "opener_sentiment", classes: str = "binary",
                       dictionary: str = "opener-apertium", test_dictionary: str | None = None, refine: int = 0,
                       dim: int = 100, seed: int = 0, vectors_dir: str | Path = "runs/vectors",
                       root: str | Path | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Train on ``<source>_train`` (labelled), evaluate on ``<target>_test`` through aligned embeddings. Returns
    (and writes to ``out/result.json``) acc and macro-F1 (%), the map's BLI P@1/P@5 on ``test_dictionary`` when given,
    the dictionary and vocabulary sizes, and out-of-vocabulary rates."""
    from sklearn.linear_model import LogisticRegression

    if classes not in CLASS_VIEWS:
        raise DataError(f"classes must be one of {', '.join(CLASS_VIEWS)}; got {classes!r}")
    base = tl_data.data_root(root)
    folder = Path(vectors_dir)
    src_wv, src_stats = language_vectors(dataset, source, folder, root=root, dim=dim, seed=seed)
    tgt_wv, tgt_stats = language_vectors(dataset, target, folder, root=root, dim=dim, seed=seed)
    dict_path, invert = seed_dictionary(dictionary, source, target, base)
    pairs = read_dictionary(dict_path, source_vocab=tgt_wv, target_vocab=src_wv, invert=invert, lowercase=True)
    if len(pairs) < 2:
        raise DataError(f"only {len(pairs)} pairs of {dict_path} have both words in the vocabularies; a map needs more")
    alignment = align(tgt_wv, src_wv, pairs, refine=refine)
    result: dict[str, Any] = {
        "task": f"{dataset}:{source}_train->{target}_test", "method": "aligned_embeddings", "classes": classes,
        "seed": seed, "dictionary": str(dictionary), "seed_pairs": len(pairs), "refine": refine, "dim": dim,
        "vectors": {source: {k: src_stats.get(k) for k in ("sentences", "tokens", "types", "vocab")},
                    target: {k: tgt_stats.get(k) for k in ("sentences", "tokens", "types", "vocab")}}}
    if test_dictionary:
        test_path, test_invert = seed_dictionary(test_dictionary, source, target, base)
        test_pairs = read_dictionary(test_path, invert=test_invert, lowercase=True)
        bli = bli_precision(tgt_wv, src_wv, alignment, test_pairs, ks=(1, 5), method="csls")
        result["bli"] = {k: v for k, v in bli.items() if isinstance(v, (int, float))}

    def labelled(part: str):
        d = tl_data.load(dataset, part, root)
        return d if CLASS_VIEWS[classes] is None else select_classes(d, CLASS_VIEWS[classes])

    train, test = labelled(f"{source}_train"), labelled(f"{target}_test")
    x_train, train_oov = sentence_vectors(train.texts, src_wv, return_stats=True)
    x_test, test_oov = sentence_vectors(test.texts, tgt_wv, alignment, return_stats=True)
    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, train.y.numpy())
    predicted = torch.from_numpy(classifier.predict(x_test)).long()
    metrics = classification_metrics(confusion_matrix(test.y, predicted, train.num_classes))
    result.update({"target_test/acc": metrics["acc"], "target_test/macro_f1": metrics["macro_f1"],
                   "oov_rate": {"source_train": train_oov["oov_rate"], "target_test": test_oov["oov_rate"]},
                   "sentences_without_known_words": {"source_train": train_oov["empty"],
                                                     "target_test": test_oov["empty"]}})
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "result.json", result)
    return result
