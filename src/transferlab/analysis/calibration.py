"""Calibration: does a classifier's confidence match its accuracy, and temperature scaling to fix it.

Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017:

* :func:`ece`: expected calibration error of the top-class confidence,
  ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|, over equal-width (``"width"``, Guo et al.'s
  definition) or equal-mass (``"mass"``, quantile) confidence bins. A fraction in [0, 1], not a
  percentage: 0 is perfectly calibrated, 1 is always fully confident and always wrong.
  :func:`confidence_ece` is the same number from per-sample (top-class confidence, correct) pairs,
  what the engine's evaluation keeps.
* :func:`reliability`: the per-bin numbers a reliability diagram plots; :func:`plot_reliability`
  draws several of them (e.g. before / after temperature scaling) on one axes.
* :func:`nll` (mean cross-entropy of logits, natural log) and :func:`auc` (ROC AUC, one-vs-rest macro
  for more than two classes).
* :func:`fit_temperature` / :func:`apply_temperature`: one scalar T > 0 dividing the logits, fitted by
  minimising the NLL on *validation* logits; it never changes the argmax, so accuracy is unchanged.
* :func:`calibration_report`: fit T on a validation split and report the test split's metrics
  before and after; :func:`logit_metrics`: those metrics for one split.

Probabilities are an (N, C) matrix of rows summing to 1, or for a binary task an (N,) vector of
positive-class (class 1) probabilities. Logits are an (N, C) matrix. Labels are N class indices in
0..C-1. Inputs may be torch tensors or array-likes; everything is computed in float64 NumPy.
Invalid input raises :class:`~transferlab.errors.DataError` saying what is wrong.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import optimize, special
from sklearn.metrics import roc_auc_score

from ..errors import DataError, TransferlabError

ArrayLike = Any  # torch.Tensor | np.ndarray | nested lists

STRATEGIES = ("width", "mass")
T_BOUNDS = (1e-2, 1e2)  # the range fit_temperature searches (in log space)
_SUM_TOLERANCE = 1e-3  # rows of a probability matrix must sum to 1 within this (float32 softmax passes)


# ---------------------------------------------------------------- validation


def _numeric(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric, got {type(x).__name__} ({exc})") from None
    if x.size == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum()) if x.ndim else 1
        raise DataError(f"{name} contains NaN or Inf in {bad} of {len(x) if x.ndim else 1} samples; "
                        "drop or fix those samples (a diverged model produces them)")
    return x


def _probabilities(p: ArrayLike, name: str = "probabilities") -> np.ndarray:
    """(N, C) probability matrix; an (N,) vector is the positive-class probability of a binary task."""
    p = _numeric(p, name)
    if p.ndim == 1:
        if (p < 0).any() or (p > 1).any():
            raise DataError(f"{name} must lie in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]; "
                            "if these are logits, apply sigmoid / softmax first")
        return np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise DataError(f"{name} must be (samples, classes) or (samples,) for a binary task, "
                        f"got shape {tuple(p.shape)}")
    if p.shape[1] < 2:
        raise DataError(f"{name} has {p.shape[1]} column(s); pass one column per class (at least 2), "
                        "or an (N,) vector of positive-class probabilities for a binary task")
    if (p < 0).any() or (p > 1).any():
        raise DataError(f"{name} must lie in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]; "
                        "if these are logits, apply softmax first")
    sums = p.sum(axis=1)
    if not np.all(np.abs(sums - 1.0) <= _SUM_TOLERANCE):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise DataError(f"rows of {name} must sum to 1 (one distribution per sample), one sums to {worst:.4g}; "
                        "if these are logits, apply softmax first")
    return p


def _logits(z: ArrayLike, name: str = "logits") -> np.ndarray:
    z = _numeric(z, name)
    if z.ndim != 2 or z.shape[1] < 2:
        raise DataError(f"{name} must be (samples, classes) with at least 2 classes, got shape {tuple(z.shape)}; "
                        "for a single binary logit s pass the two columns [0, s]")
    return z


def _labels(y: ArrayLike, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """Integer class indices, one per sample, each in 0..n_classes-1."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name} must be one class index per sample (1-D), got shape {tuple(y.shape)}; "
                        "pass class indices, not one-hot vectors")
    if len(y) != n:
        raise DataError(f"{name} has {len(y)} entries but there are {n} samples; pass one label per sample")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise DataError(f"{name} must be integer class indices, got non-integer or NaN values")
    y = y.astype(np.int64)
    if (y < 0).any() or (y >= n_classes).any():
        raise DataError(f"{name} must lie in 0..{n_classes - 1} ({n_classes} classes), got values in "
                        f"[{y.min()}, {y.max()}]; check the label mapping or the number of model outputs")
    return y


def _options(n_bins: int, strategy: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise TransferlabError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy not in STRATEGIES:
        raise TransferlabError(f"unknown binning strategy {strategy!r}; use 'width' or 'mass'")


def _softmax(z: np.ndarray) -> np.ndarray:
    return special.softmax(z, axis=1)


# ---------------------------------------------------------------- calibration error


def _mass_edges(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior edges of (up to) ``n_bins`` equal-count bins of ``conf``.

    The ideal boundaries sit after ranks round(j·N/n_bins); each moves to the nearest rank where the
    sorted confidence strictly increases, so tied values are never split across bins (the binning does
    not depend on sample order), and the edge is the midpoint of the two values either side. Ties can
    merge bins, so fewer than ``n_bins`` may result; none is empty.
    """
    s = np.sort(conf)
    n = len(s)
    allowed = np.flatnonzero(s[1:] > s[:-1]) + 1  # k: s[k-1] < s[k]
    if len(allowed) == 0:
        return np.empty(0)
    chosen = set()
    for j in range(1, n_bins):
        target = j * n / n_bins
        k = allowed[np.argmin(np.abs(allowed - target))]  # first of equally near ranks: the lower one
        chosen.add(int(k))
    ks = np.array(sorted(chosen), dtype=np.int64)
    return (s[ks - 1] + s[ks]) / 2.0


def _binned(probabilities: ArrayLike, labels: ArrayLike, n_bins: int, strategy: str) -> dict[str, Any]:
    _options(n_bins, strategy)
    p = _probabilities(probabilities)
    y = _labels(labels, len(p), p.shape[1])
    return _binned_confidence(p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64), n_bins, strategy)


def _binned_confidence(conf: np.ndarray, correct: np.ndarray, n_bins: int, strategy: str) -> dict[str, Any]:
    """The bins of :func:`_binned` from each sample's top-class confidence and 0/1 correctness (both (N,) float64,
    already checked)."""
    if strategy == "width":
        interior = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    else:
        interior = _mass_edges(conf, n_bins)
    edges = np.concatenate([[0.0], interior, [1.0]])
    # Bins are right-closed, (lo, hi], the first one [0, hi] (Guo et al.): conf <= edge -> lower bin.
    index = np.searchsorted(interior, conf, side="left")
    n_b = len(edges) - 1
    count = np.bincount(index, minlength=n_b).astype(np.int64)
    conf_sum = np.bincount(index, weights=conf, minlength=n_b)
    acc_sum = np.bincount(index, weights=correct, minlength=n_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        accuracy = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    gaps = np.where(count > 0, np.abs(accuracy - mean_conf), 0.0)
    value = float(np.sum(count / len(conf) * gaps))
    return {"strategy": strategy, "edges": edges, "confidence": mean_conf, "accuracy": accuracy, "count": count,
            "ece": value, "n": len(conf), "overall_accuracy": float(correct.mean()),
            "overall_confidence": float(conf.mean())}


def ece(probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 15, strategy: str = "width") -> float:
    """Expected calibration error of the top-class confidence (Guo et al., ICML 2017, eq. 3):

        ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|,

    where sample i has confidence max_c p_ic and is correct when argmax_c p_ic equals its label
    (ties in the argmax go to the lower class index). ``probabilities``: (N, C) rows summing to 1, or
    an (N,) vector of positive-class probabilities of a binary task (top class argmax [1 − p, p]).

    ``strategy="width"``: ``n_bins`` bins of equal width on [0, 1], right-closed (lo, hi] with the
    first [0, hi] (a confidence on an edge falls in the lower bin). ``strategy="mass"``: up to
    ``n_bins`` bins with equal numbers of samples (quantile edges at midpoints between consecutive
    sorted confidences); samples with equal confidence always share a bin, so ties can make bins
    unequal or fewer. Empty bins contribute nothing.

    Returns a fraction in [0, 1] (multiply by 100 for the percentages papers quote).
    """
    return _binned(probabilities, labels, n_bins, strategy)["ece"]


def confidence_ece(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: str = "width") -> float:
    """:func:`ece` from what it reads of each sample: its top-class ``confidence`` (N,) in [0, 1] and whether the
    top class was its label, ``correct`` (N,) of 0/1 (or bools). Same bins and value as ``ece(probabilities,
    labels)`` when ``confidence = max_c p_ic`` and ``correct = [argmax_c p_ic == y_i]``; for callers that keep two
    numbers per sample instead of the (N, C) probabilities (the engine's evaluation gathers them across
    processes). Returns a fraction in [0, 1]."""
    _options(n_bins, strategy)
    conf = _numeric(confidence, "confidence")
    ok = _numeric(correct, "correct")
    if conf.ndim != 1:
        raise DataError(f"confidence must be one top-class probability per sample (1-D), got shape {conf.shape}")
    if ok.shape != conf.shape:
        raise DataError(f"correct has shape {ok.shape} but confidence has {conf.shape}; pass one of each per sample")
    if (conf < 0).any() or (conf > 1).any():
        raise DataError(f"confidence must lie in [0, 1], got values in [{conf.min():.4g}, {conf.max():.4g}]; "
                        "pass the top-class probability, not a logit")
    if not np.isin(ok, (0.0, 1.0)).all():
        raise DataError("correct must hold 0 or 1 (whether each sample's top class is its label)")
    return _binned_confidence(conf, ok, n_bins, strategy)["ece"]


def reliability(probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 15,
                strategy: str = "width") -> dict[str, Any]:
    """The numbers a reliability diagram plots, with the bins of :func:`ece` (same arguments).

    Returns a dict: ``edges`` (B + 1,) bin edges from 0 to 1; per bin (B,): ``confidence`` (mean
    top-class confidence), ``accuracy`` (fraction correct), both NaN for an empty bin, and ``count``
    (int); ``ece`` (float, as :func:`ece`), ``strategy``, ``n`` (samples), ``overall_accuracy`` and
    ``overall_confidence``. Arrays are NumPy; B is ``n_bins`` for ``"width"``, at most ``n_bins`` for
    ``"mass"``.
    """
    return _binned(probabilities, labels, n_bins, strategy)


def plot_reliability(diagrams: dict[str, dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Write a reliability diagram (PNG) of one or more :func:`reliability` results on one axes.

    ``diagrams`` maps a legend name (e.g. ``"before"``, ``"after T=2.1"``) to a :func:`reliability`
    dict. Each curve is drawn as translucent bars of per-bin accuracy over the bin's edges and a line
    through (mean confidence, accuracy) of the non-empty bins; the legend gives each curve's ECE in
    percent. The dashed diagonal is perfect calibration. Returns the path written (parents created).
    Uses matplotlib's Agg canvas without pyplot, so no global backend is changed.
    """
    if not isinstance(diagrams, dict) or not diagrams:
        raise DataError("plot_reliability needs a non-empty dict {name: reliability(...) result}")
    needed = ("edges", "confidence", "accuracy", "count", "ece")
    for name, d in diagrams.items():
        missing = [k for k in needed if not isinstance(d, dict) or k not in d]
        if missing:
            raise DataError(f"diagram {name!r} lacks {', '.join(missing)}; pass the dict returned by reliability()")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    colors = [f"C{i % 10}" for i in range(len(diagrams))]
    for (name, d), color in zip(diagrams.items(), colors):
        edges = np.asarray(d["edges"], dtype=np.float64)
        conf = np.asarray(d["confidence"], dtype=np.float64)
        acc = np.asarray(d["accuracy"], dtype=np.float64)
        count = np.asarray(d["count"])
        full = count > 0
        ax.bar(edges[:-1][full], acc[full], width=np.diff(edges)[full], align="edge", color=color, alpha=0.2,
               edgecolor=color, linewidth=0.5)
        ax.plot(conf[full], acc[full], marker="o", markersize=4, color=color,
                label=f"{name} (ECE {100 * float(d['ece']):.2f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------- likelihood and ranking


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean −log softmax(z)_y, as log(1 + Σ_{c≠y} exp(z_c − z_y)) for confident correct rows, so that
    losses far below float64's resolution of 1 (e.g. 1e-30) stay exact instead of rounding to 0."""
    rows = np.arange(len(z))
    d = z - z[rows, y][:, None]  # d_y = 0
    d[rows, y] = -np.inf
    m = np.maximum(d.max(axis=1), 0.0)
    rest = np.exp(d - m[:, None]).sum(axis=1)
    per_sample = np.where(m > 0, m + np.log(np.exp(-m) + rest), np.log1p(rest))
    return float(np.mean(per_sample))


def nll(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood (cross-entropy, natural log) of the labels under softmax(logits)."""
    z = _logits(logits)
    return _nll(z, _labels(labels, len(z), z.shape[1]))


def auc(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC (scikit-learn's ``roc_auc_score``).

    Binary: the AUC of the positive-class (class 1) probability (an (N,) vector or column 1 of an
    (N, 2) matrix). More classes: one-vs-rest macro average, the mean over classes c of the AUC of
    p_c for "label == c" against the rest, which equals ``roc_auc_score(..., multi_class="ovr",
    average="macro")``; classes absent from ``labels`` are left out of the mean (their AUC is
    undefined). Raises DataError when the labels hold only one class.
    """
    p = _probabilities(probabilities)
    y = _labels(labels, len(p), p.shape[1])
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"AUC needs labels of at least two classes, all {len(y)} labels are class {present[0]}; "
                        "evaluate on a split that contains several classes")
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))


# ---------------------------------------------------------------- temperature scaling


def apply_temperature(logits: ArrayLike, temperature: float):
    """``logits / temperature``: softmax of the result are the temperature-scaled probabilities.

    Takes no labels: T is fitted elsewhere (:func:`fit_temperature`, on validation data) and only
    applied here. Returns a torch tensor for a tensor input (same dtype and device), else a float64
    NumPy array.
    """
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise TransferlabError(f"temperature must be a finite positive number, got {temperature!r}")
    if isinstance(logits, torch.Tensor):
        _logits(logits)
        return logits / t
    return _logits(logits) / t


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al., ICML 2017, sec. 4.2).

    Fit on VALIDATION logits and labels only (held-out folds of the training data, or the target's
    validation split), never on the test set: T is then applied to the test logits with
    :func:`apply_temperature`, and test metrics after scaling stay unbiased.

    The NLL is convex in 1/T, so it has a single minimum; it is found by bounded Brent search over
    log T in [log 0.01, log 100] (``max_iter`` iterations at most). Over-confident logits give T > 1,
    under-confident ones T < 1, calibrated ones T ≈ 1. When the validation predictions are all correct
    the NLL keeps falling as T -> 0 and T ≈ 0.01 (the lower bound) is returned; all wrong gives T ≈ 100.
    """
    z = _logits(logits)
    y = _labels(labels, len(z), z.shape[1])
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise TransferlabError(f"max_iter must be a positive integer, got {max_iter!r}")

    def objective(log_t: float) -> float:
        return _nll(z * math.exp(-log_t), y)

    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    result = optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                      options={"xatol": 1e-7, "maxiter": int(max_iter)})
    return float(math.exp(result.x))


def _metrics(z: np.ndarray, y: np.ndarray, n_bins: int) -> dict[str, float | None]:
    p = _softmax(z)
    try:
        area = auc(p, y)
    except DataError:  # one class in the test labels: AUC undefined, the rest still meaningful
        area = None
    return {"acc": float(np.mean(p.argmax(axis=1) == y)), "nll": _nll(z, y),
            "ece": _binned(p, y, n_bins, "width")["ece"], "ece_mass": _binned(p, y, n_bins, "mass")["ece"],
            "auc": area}


def logit_metrics(logits: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, float | None]:
    """What :func:`calibration_report` gives for a split, of softmax(``logits``) against ``labels``: ``acc`` (a
    fraction), ``nll`` (mean, nats), ``ece`` (equal-width bins) and ``ece_mass`` (equal-mass bins), both fractions,
    and ``auc`` (None when the labels hold one class)."""
    _options(n_bins, "width")
    z = _logits(logits)
    return _metrics(z, _labels(labels, len(z), z.shape[1]), n_bins)


def calibration_report(logits_val: ArrayLike, y_val: ArrayLike, logits_test: ArrayLike, y_test: ArrayLike,
                       n_bins: int = 15) -> dict[str, Any]:
    """Temperature scaling fitted on the validation split, evaluated on the test split.

    T comes from :func:`fit_temperature` on (``logits_val``, ``y_val``) only; the test labels are
    used for the metrics and nothing else. Returns ``{"temperature": T, "before": m, "after": m,
    "n_val", "n_test", "n_bins"}``, each ``m`` the test split's ``acc``, ``nll`` (mean, nats),
    ``ece`` (equal-width bins), ``ece_mass`` (equal-mass bins), both fractions in [0, 1], and ``auc``
    (None when the test labels hold one class). ``acc`` is the same before and after (T keeps the argmax).
    """
    _options(n_bins, "width")
    zv = _logits(logits_val, "logits_val")
    yv = _labels(y_val, len(zv), zv.shape[1], "y_val")
    zt = _logits(logits_test, "logits_test")
    if zt.shape[1] != zv.shape[1]:
        raise DataError(f"logits_val has {zv.shape[1]} classes but logits_test has {zt.shape[1]}; "
                        "pass logits of the same model head on both splits")
    yt = _labels(y_test, len(zt), zt.shape[1], "y_test")
    t = fit_temperature(zv, yv)
    return {"temperature": t, "before": _metrics(zt, yt, n_bins), "after": _metrics(zt / t, yt, n_bins),
            "n_val": len(zv), "n_test": len(zt), "n_bins": int(n_bins)}
