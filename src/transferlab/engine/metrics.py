"""Metrics as JSON lines: one record per log/eval event, ``{"step": ..., "kind": "train"|"eval", ...}``, and the
same records sent to experiment trackers (``train.trackers``: TensorBoard, MLflow, Weights & Biases) through
Accelerate's maintained tracker integrations, which write next to ``metrics.jsonl`` (TensorBoard: ``<run>/tensorboard``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import TransferlabError
from .checkpoint import atomic_write_text

def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``[true, predicted]`` of shape ``(num_classes, num_classes)``, on the labels' device (no host sync)."""
    k = num_classes
    return torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)


def classification_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-F1 (both %) from a confusion matrix ``confusion[true, predicted]`` of counts (summed over
    processes before this is called). Macro-F1 averages the per-class F1 over the classes that occur in the labels
    or the predictions (scikit-learn's ``f1_score(average="macro")`` on the same predictions, with its zero for a
    class that is predicted but never true)."""
    confusion = confusion.double()
    total = confusion.sum()
    tp = confusion.diagonal()
    true, predicted = confusion.sum(1), confusion.sum(0)
    present = (true + predicted) > 0
    f1 = torch.where(present, 2 * tp / (true + predicted).clamp_min(1), torch.zeros_like(tp))
    return {"acc": 100.0 * (tp.sum() / total.clamp_min(1)).item(),
            "macro_f1": 100.0 * (f1[present].mean().item() if present.any() else 0.0)}


#: Equal-width confidence bins of the ECE every classification evaluation reports (Guo et al., 2017).
ECE_BINS = 15
#: Columns of :func:`prediction_stats`: label, top-class confidence, correct (0/1), NLL, probability of class 1.
PREDICTION_STATS = ("label", "confidence", "correct", "nll", "p1")


def prediction_stats(logits: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """What :func:`calibration_metrics` needs of each sample, as float64 rows ``[label, confidence, correct, nll,
    p1]`` (:data:`PREDICTION_STATS`) on the logits' device (no host sync): the softmax probability of the
    ``predicted`` class (the logits' argmax, so ``correct`` agrees with the confusion matrix), whether it is the
    label, ``−log softmax(logits)[label]`` (natural log) and the probability of class 1 (the positive class of a
    binary task). Softmax in float64, so bf16/float32 logits lose nothing more. Five numbers per sample rather
    than the (N, C) probabilities: cheap to keep and to gather across processes."""
    log_p = torch.log_softmax(logits.detach().double(), dim=1)
    y = labels.long()
    nll = -log_p.gather(1, y[:, None])[:, 0]
    confidence = log_p.gather(1, predicted.long()[:, None])[:, 0].exp().clamp(0.0, 1.0)
    p1 = log_p[:, 1].exp() if log_p.shape[1] > 1 else torch.zeros_like(nll)
    return torch.stack([y.double(), confidence, (predicted == y).double(), nll, p1], dim=1)


def calibration_metrics(stats: torch.Tensor, num_classes: int, n_bins: int = ECE_BINS) -> dict[str, float]:
    """``nll``, ``ece`` and, for two classes, ``auc`` of a whole evaluation set from its :func:`prediction_stats`
    rows (every process's, gathered before this is called):

    * ``nll``: mean negative log-likelihood of the labels (natural log, nats per sample);
    * ``ece``: expected calibration error of the top-class confidence over ``n_bins`` equal-width bins, a
      fraction in [0, 1] (:func:`transferlab.analysis.calibration.confidence_ece`, the units of that module);
    * ``auc``: ROC AUC in [0, 1] of the class-1 probability (:func:`transferlab.analysis.calibration.auc`), only
      for ``num_classes == 2``; left out when the set's labels hold one class (undefined). Not reported for more
      classes (a one-vs-rest average would need the whole probability matrix).

    An empty set, or non-finite logits (a diverged model), gives NaN for each of them instead of an error."""
    from ..analysis.calibration import auc, confidence_ece
    from ..errors import DataError

    stats = stats.detach().double().cpu()
    if len(stats) == 0 or not bool(torch.isfinite(stats).all()):
        nan = float("nan")
        return {"nll": nan, "ece": nan, **({"auc": nan} if num_classes == 2 else {})}
    label, confidence, correct, nll, p1 = stats.unbind(1)
    metrics = {"nll": float(nll.mean()), "ece": confidence_ece(confidence.numpy(), correct.numpy(), n_bins)}
    if num_classes == 2:
        try:
            metrics["auc"] = auc(p1.numpy(), label.long().numpy())
        except DataError:  # one class in the labels: AUC is undefined, left out
            pass
    return metrics


def edit_counts(references: list[str], hypotheses: list[str]) -> torch.Tensor:
    """Word and character edit counts of hypotheses against references (both already normalised), as a float64
    tensor ``[word_errors, words, char_errors, chars, utterances]``: sums, so they add up across batches and
    processes, and :func:`error_rates` turns the totals into WER and CER. Counted by ``jiwer`` (Levenshtein
    alignment: substitutions + deletions + insertions; characters include the spaces between words, as jiwer's CER
    does). An empty reference counts its hypothesis' words as insertions."""
    try:
        import jiwer
    except ImportError:
        raise TransferlabError("WER/CER are counted by the package jiwer, which is not installed: "
                               "pip install 'transferlab[speech]' (or pip install jiwer)") from None
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    counts = torch.zeros(5, dtype=torch.float64)
    for ref, hyp in zip(references, hypotheses):
        if not ref.strip():  # jiwer refuses empty references: every hypothesis word is an insertion
            counts[0] += len(hyp.split())
            counts[2] += len(hyp)
        else:
            words = jiwer.process_words(ref, hyp)
            chars = jiwer.process_characters(ref, hyp)
            counts[0] += words.substitutions + words.deletions + words.insertions
            counts[1] += words.substitutions + words.deletions + words.hits
            counts[2] += chars.substitutions + chars.deletions + chars.insertions
            counts[3] += chars.substitutions + chars.deletions + chars.hits
        counts[4] += 1
    return counts


def error_rates(counts: torch.Tensor) -> dict[str, float]:
    """WER and CER (%) from summed :func:`edit_counts` (corpus-level: total edits over total reference words, not
    a mean of per-utterance rates)."""
    word_errors, words, char_errors, chars, _ = counts.double().tolist()
    return {"wer": 100.0 * word_errors / max(words, 1.0), "cer": 100.0 * char_errors / max(chars, 1.0)}


TRACKERS = {  # config name -> (accelerate.tracking class, the package it needs)
    "tensorboard": ("TensorBoardTracker", "tensorboard"),
    "mlflow": ("MLflowTracker", "mlflow"),
    "wandb": ("WandBTracker", "wandb"),
}


def make_trackers(names: list[str], run_dir: Path) -> list[Any]:
    """Start one Accelerate tracker per name, logging under ``run_dir`` (a missing package -> a clear error)."""
    import importlib.util

    from accelerate import tracking

    trackers = []
    for name in names:
        cls_name, package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise TransferlabError(f"train.trackers names '{name}', but the package '{package}' is not installed: "
                                   f"pip install {package} (or remove '{name}' from train.trackers)")
        cls = getattr(tracking, cls_name)
        tracker = cls("tensorboard", run_dir) if name == "tensorboard" else cls(run_dir.name, logging_dir=str(run_dir))
        tracker.start()
        trackers.append(tracker)
    return trackers


class MetricsLog:
    def __init__(self, path: Path | None, resume_step: int | None = None, trackers: list[Any] | None = None) -> None:
        self.path = path
        self.trackers = trackers or []
        if path is None:
            return
        if resume_step is not None and path.exists():
            # Drop records written after the checkpoint we resume from, so the log equals an uninterrupted run's.
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if self.trackers:
            kind = record.get("kind", "train")
            values = {(k if k.startswith("lr") else f"{kind}/{k}"): v  # train/cls_loss, eval/target_test/acc, lr
                      for k, v in record.items() if k not in ("step", "kind") and isinstance(v, (int, float))}
            for tracker in self.trackers:
                tracker.log(values, step=int(record["step"]))
        if self.path is None:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
