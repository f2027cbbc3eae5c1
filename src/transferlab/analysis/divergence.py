"""Domain divergence in feature space: the terms of Ben-David et al.'s target error bound.

Ben-David, Blitzer, Crammer, Kulesza, Pereira & Vaughan, "A theory of learning from different
domains", Machine Learning 79 (2010), Thm. 2:

    ε_T(h) ≤ ε_S(h) + ½ d_HΔH(S, T) + λ,   λ = min_h [ε_S(h) + ε_T(h)].

:func:`proxy_a_distance` estimates the divergence term from unlabelled features (Ben-David et al.,
NeurIPS 2007, sec. 5: d̂_A = 2(1 − 2ε) with ε the error of a domain classifier); :func:`joint_error`
estimates λ and needs target labels, so it is for analysis only. Transfer can work when both are
small: alignment methods (DANN, CDAN) shrink the divergence but can raise λ.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import DataError, TransferlabError
from .scores import ArrayLike, _array, _features, _labels


def _split(n: int, train_fraction: float, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, test) indices of ``range(n)``, each non-empty."""
    n_train = int(round(train_fraction * n))
    if not 1 <= n_train <= n - 1:
        raise DataError(f"{what} has {n} samples: too few to hold out a test part with train_fraction="
                        f"{train_fraction}; pass more samples (dozens at least) or another train_fraction")
    order = rng.permutation(n)
    return order[:n_train], order[n_train:]


def _classifier(kind: str, seed: int):
    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced",
                                                                  random_state=seed))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=500,
                                                             random_state=seed))
    raise TransferlabError(f"unknown classifier {kind!r}; use 'linear' or 'mlp'")


def proxy_a_distance(source_features: ArrayLike, target_features: ArrayLike, *, classifier: str = "linear",
                     seed: int = 0, train_fraction: float = 0.5) -> dict[str, float]:
    """Proxy A-distance (Ben-David et al., "Analysis of Representations for Domain Adaptation",
    NeurIPS 2007; used by Ganin et al., JMLR 2016, sec. 5.1.5):

        d̂_A = 2 (1 − 2ε),

    ε the held-out error of a classifier trained to tell source (label 0) from target (label 1).
    Each domain is shuffled with ``seed`` and split by ``train_fraction`` into train / test, so both
    parts are balanced per domain. ε is the balanced error (mean of the two per-domain error
    rates, equal to the plain error when the domains have equal size), so chance level is 0.5 even
    for unequal sizes. ``classifier``: ``"linear"`` (standardised features, logistic regression) or
    ``"mlp"`` (standardised, one hidden layer of 64).

    Returns ``a_distance`` = max(0, raw) in [0, 2] (0: indistinguishable, 2: separable),
    ``a_distance_raw`` (negative when the classifier does worse than chance), ``domain_error``,
    ``n_train`` and ``n_test``.
    """
    xs, xt = _features(source_features, "source_features"), _features(target_features, "target_features")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"source features have {xs.shape[1]} dimensions but target features have {xt.shape[1]}; "
                        "extract both with the same model and layer")
    if not 0 < train_fraction < 1:
        raise TransferlabError(f"train_fraction must be in (0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    s_train, s_test = _split(len(xs), train_fraction, rng, "source_features")
    t_train, t_test = _split(len(xt), train_fraction, rng, "target_features")
    x_train = np.concatenate([xs[s_train], xt[t_train]])
    d_train = np.concatenate([np.zeros(len(s_train)), np.ones(len(t_train))])
    model = _classifier(classifier, seed).fit(x_train, d_train)
    error_s = float((model.predict(xs[s_test]) != 0).mean())
    error_t = float((model.predict(xt[t_test]) != 1).mean())
    error = 0.5 * (error_s + error_t)
    raw = 2.0 * (1.0 - 2.0 * error)
    return {"a_distance": max(0.0, raw), "a_distance_raw": raw, "domain_error": error,
            "n_train": len(x_train), "n_test": len(s_test) + len(t_test)}


def joint_error(features_s: ArrayLike, labels_s: ArrayLike, features_t: ArrayLike, labels_t: ArrayLike,
                seed: int = 0) -> dict[str, float]:
    """Estimate λ = min_h [ε_S(h) + ε_T(h)], the error of the best joint hypothesis in Ben-David
    et al.'s bound (Machine Learning 2010, Thm. 2). **Needs target labels: for analysis only**,
    never for model selection in unsupervised adaptation.

    The hypothesis class is linear (standardised features, multinomial logistic regression). Each
    domain is shuffled with ``seed`` and split in half; one classifier is trained on the union of the
    two training halves and evaluated on each held-out half. Returns ``lambda`` = source_error +
    target_error (in [0, 2]; large λ means no single classifier on these features fits both
    domains, so no alignment of the features can make transfer work), ``source_error`` and
    ``target_error``.
    """
    xs, xt = _features(features_s, "features_s"), _features(features_t, "features_t")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"source features have {xs.shape[1]} dimensions but target features have {xt.shape[1]}; "
                        "extract both with the same model and layer")
    raw_s, raw_t = _array(labels_s), _array(labels_t)
    _labels(raw_s, len(xs), "labels_s", min_classes=1)  # shape checks only
    _labels(raw_t, len(xt), "labels_t", min_classes=1)
    y = _labels(np.concatenate([raw_s, raw_t]), None, "labels_s + labels_t")  # one coding for both domains
    ys, yt = y[:len(xs)], y[len(xs):]
    rng = np.random.default_rng(seed)
    s_train, s_test = _split(len(xs), 0.5, rng, "features_s")
    t_train, t_test = _split(len(xt), 0.5, rng, "features_t")
    y_train = np.concatenate([ys[s_train], yt[t_train]])
    if len(np.unique(y_train)) < 2:
        raise DataError("the training half holds a single class; pass more labelled samples")
    model = _classifier("linear", seed).set_params(logisticregression__class_weight=None)
    model.fit(np.concatenate([xs[s_train], xt[t_train]]), y_train)
    error_s = float((model.predict(xs[s_test]) != ys[s_test]).mean())
    error_t = float((model.predict(xt[t_test]) != yt[t_test]).mean())
    return {"lambda": error_s + error_t, "source_error": error_s, "target_error": error_t}
