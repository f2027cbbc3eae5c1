"""Transferability scores: how well will a pre-trained model transfer to a labelled target task?

Each score is computed from the target data passed once through the source model (features, or
the source classifier's outputs) and the target labels, without fine-tuning. Higher is better for
all of them. They are compared across candidate models with :func:`weighted_kendall_tau` against
the accuracies actually reached by fine-tuning.

* LogME (You et al., ICML 2021), LEEP (Nguyen et al., ICML 2020), NCE (Tran et al., ICCV 2019),
  H-score (Bao et al., ICIP 2019), TransRate (Huang et al., ICML 2022).

Inputs may be torch tensors or array-likes; everything is computed in float64 NumPy. The
private helpers ``_features`` / ``_labels`` validate inputs for the whole :mod:`analysis` package.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..errors import DataError

ArrayLike = Any  # torch.Tensor | np.ndarray | nested lists


def _features(x: ArrayLike, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 matrix (n, d); a 1-D input is one feature per sample."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{name} must be a matrix (samples, features), got shape {tuple(x.shape)}; "
                        "flatten each sample's features first")
    if len(x) < min_rows:
        raise DataError(f"{name} has {len(x)} samples; at least {min_rows} are needed")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{name} contains NaN or Inf in {bad} of {len(x)} samples; "
                        "drop or fix those samples (a diverged model produces them)")
    return x


def _array(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _labels(y: ArrayLike, n: int | None, name: str = "labels", min_classes: int = 2) -> np.ndarray:
    """Integer labels (of length ``n`` unless None) re-coded to 0..C-1 (C >= ``min_classes``)."""
    y = _array(y)
    if y.ndim != 1:
        raise DataError(f"{name} must be one label per sample (1-D), got shape {tuple(y.shape)}; "
                        "pass class indices, not one-hot vectors")
    if n is not None and len(y) != n:
        raise DataError(f"{name} has {len(y)} entries but there are {n} samples; pass one label per sample")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{name} must be integer class indices, got non-integer values")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < min_classes:
        raise DataError(f"{name} has {len(classes)} distinct class(es); at least {min_classes} are needed "
                        "(a score of a task with one class is meaningless)")
    return codes.astype(np.int64)


def _probabilities(p: ArrayLike, name: str = "source_probs") -> np.ndarray:
    p = _features(p, name, min_rows=1)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(f"{name} must hold probabilities (non-negative rows summing to 1); "
                        "if these are logits, apply softmax first")
    return p


def logme(features: ArrayLike, labels: ArrayLike, max_iter: int = 100, tol: float = 1e-10) -> float:
    """LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
    ICML 2021): the maximised log marginal likelihood of a Bayesian linear model on the features.

    For each class c, with target y = 1[label = c] (one-hot column), prior w ~ N(0, α⁻¹ I) and noise
    precision β, the evidence of F (n×D) is

        L(α, β) = n/2 log β + D/2 log α − n/2 log 2π − β/2 ‖Fm − y‖² − α/2 ‖m‖² − ½ log|A|,
        A = αI + βFᵀF,  m = β A⁻¹ Fᵀ y,

    maximised by the paper's fixed-point iteration (Alg. 1), using the SVD F = U S Vᵀ:
    γ = Σ_i βs_i²/(α + βs_i²), α ← γ/‖m‖², β ← (n − γ)/‖Fm − y‖², until α/β changes by < ``tol``
    (relative), starting from α = β = 1 (at most ``max_iter`` steps; the authors' code stops after 11).
    Returns L / n at the fixed point, averaged over classes (nats per sample). Like the paper's
    algorithm this finds a local maximum: with few samples the evidence can have a second one at
    α → ∞ (w = 0, the features explain nothing), which is not compared. Features are used as
    given (no centring or scaling), as in the paper.
    """
    f = _features(features)
    codes = _labels(labels, len(f))
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s ** 2
    evidences = []
    for c in range(codes.max() + 1):
        y = (codes == c).astype(np.float64)
        uy2 = (u.T @ y) ** 2
        out_of_span = max(float(y @ y - uy2.sum()), 0.0)  # ‖(I − UUᵀ)y‖²
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = float((s2 / (s2 + t)).sum())
            m2 = float((s2 / (s2 + t) ** 2 * uy2).sum())
            res2 = float(((t / (s2 + t)) ** 2 * uy2).sum()) + out_of_span
            alpha = gamma / max(m2, 1e-300)
            beta = (n - gamma) / max(res2, 1e-300)
            if abs(alpha / beta - t) <= tol * t:
                break
        t = alpha / beta
        m2 = float((s2 / (s2 + t) ** 2 * uy2).sum())
        res2 = float(((t / (s2 + t)) ** 2 * uy2).sum()) + out_of_span
        logdet = float(np.log(alpha + beta * s2).sum()) + (d - len(s)) * math.log(alpha)
        evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                    - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def leep(source_probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020): log expected empirical prediction.

    With θ(x_i) the source classifier's softmax over source classes z, the empirical joint is
    P̂(y, z) = 1/n Σ_{i: y_i = y} θ(x_i)_z, P̂(y | z) = P̂(y, z) / P̂(z), and

        LEEP = 1/n Σ_i log Σ_z P̂(y_i | z) θ(x_i)_z   (≤ 0; 0 = target labels fully predictable).

    Source classes never predicted (P̂(z) = 0) contribute nothing.
    """
    theta = _probabilities(source_probs)
    codes = _labels(labels, len(theta))
    onehot = np.eye(codes.max() + 1)[codes]                       # (n, C)
    joint = onehot.T @ theta / len(theta)                         # (C, Z): P̂(y, z)
    marginal = joint.sum(axis=0)                                  # P̂(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = (theta * cond[codes]).sum(axis=1)                       # Σ_z P̂(y_i|z) θ(x_i)_z
    return float(np.mean(np.log(eep)))


def nce(source_pred_labels: ArrayLike, labels: ArrayLike) -> float:
    """NCE (Tran et al., "Transferability and Hardness of Supervised Classification Tasks",
    ICCV 2019): negative conditional entropy of target labels Y given the source model's hard
    predictions Z, from their empirical joint P̂(y, z):

        NCE = −H(Y | Z) = Σ_{y,z} P̂(y, z) log P̂(y | z)   (≤ 0; 0 when Z determines Y).
    """
    y = _labels(labels, None)
    z = _labels(source_pred_labels, len(y), name="source_pred_labels", min_classes=1)
    joint = np.zeros((z.max() + 1, y.max() + 1))
    np.add.at(joint, (z, y), 1.0 / len(y))
    cond = joint / joint.sum(axis=1, keepdims=True)               # P̂(y | z); every z row occurs
    nz = joint > 0
    return float((joint[nz] * np.log(cond[nz])).sum())


def h_score(features: ArrayLike, labels: ArrayLike) -> float:
    """H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
    Learning", ICIP 2019):

        H(f) = tr( cov(f)⁺ · cov(E[f | y]) ),

    with the Moore-Penrose pseudo-inverse (singular values below max(n, d)·eps·σ_max dropped) and
    E[f | y] the class mean of each sample's class. Both covariances use the 1/n normalisation (the
    ratio does not depend on it). Lies in [0, C − 1]; invariant to invertible linear maps of f.
    """
    f = _features(features)
    codes = _labels(labels, len(f))
    f = f - f.mean(axis=0)
    means = np.stack([f[codes == c].mean(axis=0) for c in range(codes.max() + 1)])
    g = means[codes]
    cov_f = f.T @ f / len(f)
    cov_g = g.T @ g / len(f)
    pinv = np.linalg.pinv(cov_f, rtol=max(f.shape) * np.finfo(np.float64).eps, hermitian=True)
    return float(np.trace(pinv @ cov_g))


def _coding_rate(z: np.ndarray, eps: float) -> float:
    n, d = z.shape
    _, logdet = np.linalg.slogdet(np.eye(d) + d / (n * eps ** 2) * (z.T @ z))
    return 0.5 * float(logdet)


def transrate(features: ArrayLike, labels: ArrayLike, eps: float = 1e-4) -> float:
    """TransRate (Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022): the
    coding-rate gain of the features from knowing the labels,

        TrR = R(Z) − R(Z | Y),  R(Z) = ½ logdet(I_d + d/(n ε²) ZᵀZ),
        R(Z | Y) = Σ_y (n_y / n) R(Z_y),

    on features Z (n×d) centred once over all samples (class subsets Z_y are not re-centred),
    with R(Z_y) using n_y. ``eps`` is the distortion ε (the paper's formula, ε²). Note: the
    authors' released code uses d/(n·ε) without the square and the plain class average 1/C.
    """
    z = _features(features)
    codes = _labels(labels, len(z))
    if eps <= 0:
        raise DataError(f"eps must be positive, got {eps}")
    z = z - z.mean(axis=0)
    conditional = sum((codes == c).mean() * _coding_rate(z[codes == c], eps) for c in range(codes.max() + 1))
    return _coding_rate(z, eps) - float(conditional)


def weighted_kendall_tau(scores: ArrayLike, accuracies: ArrayLike) -> float:
    """Weighted Kendall's τ_w (Vigna, WWW 2015) between a transferability score and the fine-tuned
    accuracies of the same candidate models, as used by You et al. (2021) to rank scores.

    ``scipy.stats.weightedtau`` with its defaults (hyperbolic weight 1/(r + 1) on the rank r, by
    decreasing value, so disagreements among the best models cost more). In [−1, 1]; 1 = same order.
    """
    s, a = _features(scores, "scores"), _features(accuracies, "accuracies")
    if s.shape[1] != 1 or a.shape[1] != 1:
        raise DataError("scores and accuracies must be 1-D: one number per candidate model")
    if len(s) != len(a):
        raise DataError(f"scores has {len(s)} entries but accuracies has {len(a)}; pass one of each per model")
    return float(stats.weightedtau(s.ravel(), a.ravel()).statistic)
