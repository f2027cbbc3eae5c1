"""The information-bottleneck view of transfer: a representation Z transfers well when it keeps the information
about the target label, I(Z; Y_target) high, and drops what tells the domains apart, I(Z; D) low (Tishby &
Zaslavsky, "Deep Learning and the Information Bottleneck Principle", ITW 2015; domain adaptation's version of
the same wish is Ben-David et al.'s small divergence at small joint error).

Mutual information between a continuous, high-dimensional Z and a discrete label cannot be computed, only
estimated; two estimators with different assumptions are given, to be read side by side:

* :func:`variational_mi`: a lower bound from a probe classifier q(y|z) (Barber & Agakov 2003; Poole, Ozair,
  van den Oord, Alemi & Tucker, "On Variational Bounds of Mutual Information", ICML 2019, eq. 2):
  I(Z; Y) ≥ H(Y) − E[−log q(Y|Z)], fitted on one split and evaluated on another.
* :func:`knn_mi`: the k-nearest-neighbour estimator for a discrete and a continuous variable (Ross, "Mutual
  Information between Discrete and Continuous Data Sets", PLoS ONE 2014, after Kraskov, Stögbauer &
  Grassberger, Phys. Rev. E 2004) on a whitened PCA projection of Z.

Both return nats (``mi``) and bits (``mi_bits``), with a confidence interval. Pure functions on arrays: the
only model fitted is the probe.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..errors import DataError, TransferlabError
from .scores import ArrayLike, _features, _labels

LOG2 = math.log(2.0)
CS = tuple(np.logspace(-4, 4, 9))  # the probe's inverse regularisation strengths, chosen by cross-validation


def entropy(labels: ArrayLike) -> float:
    """Plug-in entropy H(Y) = −Σ_y p̂(y) log p̂(y) of discrete labels, in nats (biased low by about
    (C − 1)/(2n) for C classes and n samples, Miller 1955)."""
    codes = _labels(labels, None, "labels", min_classes=1)
    p = np.bincount(codes) / len(codes)
    return float(-(p * np.log(p)).sum())


def _check(features: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    z = _features(features, "features", min_rows=4)
    y = _labels(labels, len(z), "labels")
    return z, y


def _z(confidence: float) -> float:
    """The normal quantile of a two-sided interval at ``confidence``."""
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise TransferlabError(f"confidence must be in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


def _bits(result: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    for key in keys:
        value = result[key]
        result[f"{key}_bits"] = [v / LOG2 for v in value] if isinstance(value, list) else value / LOG2
    return result


def variational_mi(features: ArrayLike, labels: ArrayLike, *, train_fraction: float = 0.5, seed: int = 0,
                   probe_dims: int | None = None, n_bootstrap: int = 200, confidence: float = 0.95) -> dict[str, Any]:
    """Variational lower bound on I(Z; Y) from a held-out probe classifier (Barber & Agakov 2003; Poole et al.,
    ICML 2019, the "BA" bound): for any conditional q,

        I(Z; Y) = H(Y) − H(Y | Z) ≥ H(Y) − E_{p(z, y)}[−log q(y | z)],

    with equality when q is the true posterior p(y | z). Procedure:

    * **split**: a stratified split by ``seed`` into a probe-training part (``train_fraction``, default half)
      and a held-out part, both with every class;
    * **probe**: standardised features (optionally PCA to ``probe_dims``, fitted on the training part; by
      data processing I(PCA(Z); Y) ≤ I(Z; Y), so the bound stays a bound), then multinomial logistic
      regression whose regularisation is chosen among C ∈ 10⁻⁴…10⁴ by 3-fold cross-validated log-loss *on the
      training part only* (an over-confident probe would make the bound very negative);
    * **evaluation**: on the held-out part, the cross-entropy CE = −mean log q(yᵢ | zᵢ) and the plug-in
      entropy H(Y) of the held-out labels; ``mi`` = H(Y) − CE. As the probe never saw the held-out part, CE
      is an unbiased estimate of E[−log q(Y|Z)] for this q, so ``mi`` estimates a true lower bound (up to the
      small downward bias of plug-in H);
    * **interval**: ``mi`` ± z·SE at ``confidence``, SE the standard deviation of the bound over
      ``n_bootstrap`` bootstrap resamples of the held-out samples (H and CE recomputed on each; a normal
      interval, because plug-in H is biased low on resamples, which shifts percentile intervals). The probe is
      kept fixed, so the interval covers evaluation noise, not the variation of the probe fit (the runs' seeds
      cover that).

    Reading: ≈ H(Y) when Z determines Y, ≈ 0 when Z is independent of Y (it can fall slightly below 0: a probe
    no better than the class prior). A linear probe only finds linearly decodable information, so a low value
    does not prove that Z lacks the information. Returns nats: ``mi``, ``ci``, ``se``, ``entropy``, ``cross_entropy``
    (and each ``*_bits``), ``n_train``, ``n_test``, ``probe_C``, ``unit`` = "nats".
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z, y = _check(features, labels)
    if not 0 < train_fraction < 1:
        raise TransferlabError(f"train_fraction must be in (0, 1), got {train_fraction}")
    counts = np.bincount(y)
    n_train_min = int(np.floor(counts.min() * train_fraction))
    if n_train_min < 2 or counts.min() - n_train_min < 1:
        raise DataError(f"the rarest class has {counts.min()} samples: too few to put at least 2 in the probe's "
                        f"training part and 1 in the held-out part (train_fraction={train_fraction}); "
                        "pass more samples")
    train, test = train_test_split(np.arange(len(y)), train_size=train_fraction, stratify=y, random_state=seed)
    folds = int(min(3, np.bincount(y[train]).min()))
    steps: list[Any] = [StandardScaler()]
    if probe_dims is not None:
        if probe_dims < 1:
            raise TransferlabError(f"probe_dims must be >= 1 or None, got {probe_dims}")
        if probe_dims < min(z.shape[1], len(train)):
            steps.append(PCA(probe_dims, random_state=seed))
    probe = LogisticRegressionCV(Cs=list(CS), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                 scoring="neg_log_loss", max_iter=2000)
    with warnings.catch_warnings():  # scikit-learn 1.8+ announces changes of LogisticRegressionCV's defaults
        warnings.simplefilter("ignore", FutureWarning)
        model = make_pipeline(*steps, probe).fit(z[train], y[train])
    log_q = model.predict_log_proba(z[test])
    column = {c: i for i, c in enumerate(model.classes_)}
    per_sample = log_q[np.arange(len(test)), [column[c] for c in y[test]]]
    y_test = y[test]

    def bound(index: np.ndarray) -> tuple[float, float, float]:
        p = np.bincount(y_test[index]) / len(index)
        h = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        ce = float(-per_sample[index].mean())
        return h - ce, h, ce

    mi, h, ce = bound(np.arange(len(test)))
    rng = np.random.default_rng(seed)
    boot = [bound(rng.integers(0, len(test), len(test)))[0] for _ in range(n_bootstrap)]
    se = float(np.std(boot, ddof=1)) if n_bootstrap > 1 else 0.0
    half_width = _z(confidence) * se
    return _bits({"mi": mi, "ci": [mi - half_width, mi + half_width], "se": se, "entropy": h, "cross_entropy": ce,
                  "n_train": len(train), "n_test": len(test), "probe_C": float(np.atleast_1d(probe.C_)[0]),
                  "confidence": confidence, "estimator": "variational (held-out logistic probe)", "unit": "nats"},
                 ("mi", "ci", "se", "entropy", "cross_entropy"))


def _ross(z: np.ndarray, y: np.ndarray, k: int) -> float:
    """Ross (2014), eq. 2: I = ψ(N) − ⟨ψ(N_y)⟩ + ψ(k) − ⟨ψ(m)⟩ with the max-norm. For each point, d is the
    distance to its k-th nearest neighbour among points of its own class (N_y of them) and m the number of
    points of any class within d (the point itself included, the k-th neighbour not: scikit-learn's
    convention). Points whose class has one member are dropped."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    keep = np.bincount(y)[y] > 1
    z, y = z[keep], y[keep]
    radius, k_used, n_class = np.empty(len(y)), np.empty(len(y)), np.empty(len(y))
    for c in np.unique(y):
        index = np.flatnonzero(y == c)
        kc = min(k, len(index) - 1)
        distance, _ = cKDTree(z[index]).query(z[index], k=kc + 1, p=np.inf)  # the first neighbour is the point
        radius[index] = np.nextafter(distance[:, -1], 0)
        k_used[index], n_class[index] = kc, len(index)
    m = cKDTree(z).query_ball_point(z, radius, p=np.inf, return_length=True)
    return float(digamma(len(y)) + digamma(k_used).mean() - digamma(n_class).mean() - digamma(m).mean())


def knn_mi(features: ArrayLike, labels: ArrayLike, *, k: int = 3, dims: int | None = 8, seed: int = 0,
           n_subsamples: int = 30, confidence: float = 0.95) -> dict[str, Any]:
    """k-nearest-neighbour estimate of I(Z; Y) for continuous Z and discrete Y (Ross, PLoS ONE 2014, the
    estimator of scikit-learn's ``mutual_info_classif``, here on the joint vector, not feature by feature;
    Kraskov, Stögbauer & Grassberger, Phys. Rev. E 2004, for the continuous-continuous original).

    Z is standardised and projected by PCA onto its first ``dims`` principal components, whitened (unit
    variance each; all components when Z has fewer; ``dims=None``: no reduction); a jitter of 10⁻¹⁰ standard
    deviations (seeded) breaks ties between identical points, as scikit-learn does. The estimate is then
    ψ(N) − ⟨ψ(N_y)⟩ + ψ(k) − ⟨ψ(m)⟩ (see :func:`_ross`).

    Why this second estimator (and not InfoNCE/MINE): it has nothing in common with :func:`variational_mi`;
    it fits no critic or classifier, and assumes only that the density of Z is locally constant within each
    point's k-neighbourhood, while the variational bound assumes that a linear probe can represent the
    posterior. InfoNCE would be another trained, variational bound, capped at log(batch size) (Poole et al.
    2019). Agreement of the two is evidence; disagreement is informative (a non-linear dependence the probe
    misses makes kNN higher, high dimension makes kNN lower).

    Assumptions and limits: the estimator is consistent, but biased towards 0 in high dimension, hence the
    projection. The projection is a function of Z, so I(PCA(Z); Y) ≤ I(Z; Y) (data processing): it estimates
    a lower bound of the full-Z quantity, fitted without labels. The default 8 dimensions keep the bias small
    for thousands of samples (Kraskov et al. report reliable estimates up to about ten dimensions) while
    keeping most of the variance of a trained representation. Estimates may be slightly negative at
    independence (reported, not clipped: scikit-learn clips to 0).

    Interval: delete-half jackknife (half-sampling; Shao & Wu, Ann. Stat. 1989): the estimate on
    ``n_subsamples`` random halves drawn without replacement; their standard deviation estimates the
    standard error of the full-sample estimate (for a mean it is exactly its conditional variance), and
    ``ci`` = estimate ± z·SE at ``confidence`` (the bootstrap is not used: resampled duplicates sit at
    distance 0 and break nearest-neighbour estimators). It covers sampling noise, not the bias.
    Returns nats: ``mi``, ``ci``, ``se`` (each also ``*_bits``), ``n``, ``k``, ``dims``, ``unit`` = "nats".
    """
    from sklearn.decomposition import PCA

    z, y = _check(features, labels)
    if k < 1:
        raise TransferlabError(f"k must be >= 1, got {k}")
    if dims is not None and dims < 1:
        raise TransferlabError(f"dims must be >= 1 or None, got {dims}")
    std = z.std(axis=0)
    z = z[:, std > 0]
    if z.shape[1] == 0:
        raise DataError("features are constant over the samples; mutual information is 0 and the kNN estimate "
                        "undefined")
    z = (z - z.mean(axis=0)) / std[std > 0]
    if dims is not None:
        z = PCA(min(dims, z.shape[1], len(z) - 1), whiten=True, random_state=seed).fit_transform(z)
    rng = np.random.default_rng(seed)
    z = z + 1e-10 * rng.standard_normal(z.shape)
    mi = _ross(z, y, k)
    halves = [_ross(z[index], y[index], k)
              for index in (np.sort(rng.permutation(len(y))[:len(y) // 2]) for _ in range(n_subsamples))]
    se = float(np.std(halves, ddof=1)) if n_subsamples > 1 else 0.0
    half_width = _z(confidence) * se
    return _bits({"mi": mi, "ci": [mi - half_width, mi + half_width], "se": se, "n": len(y), "k": k,
                  "dims": z.shape[1], "confidence": confidence,
                  "estimator": f"kNN (Ross 2014), k={k}, PCA-{z.shape[1]}",
                  "unit": "nats"}, ("mi", "ci", "se"))


def domain_labels(source: ArrayLike, target: ArrayLike, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source and target features stacked with domain labels D (0 source, 1 target), the larger domain
    subsampled (by ``seed``) to the size of the smaller, so H(D) = log 2 and I(Z; D) ∈ [0, log 2] nats
    ([0, 1] bit): the input of :func:`variational_mi` / :func:`knn_mi` for I(Z; D)."""
    s, t = _features(source, "source"), _features(target, "target")
    if s.shape[1] != t.shape[1]:
        raise DataError(f"source features have {s.shape[1]} dimensions but target features have {t.shape[1]}; "
                        "extract both from the same layer")
    n = min(len(s), len(t))
    rng = np.random.default_rng(seed)
    s, t = s[np.sort(rng.permutation(len(s))[:n])], t[np.sort(rng.permutation(len(t))[:n])]
    return np.concatenate([s, t]), np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
