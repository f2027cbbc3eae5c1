"""Representation similarity: how much two layers (or two models, before and after transfer) agree.

Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .scores import ArrayLike, _features


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear centred kernel alignment (Kornblith et al., ICML 2019, eq. 2 with linear kernels):

        CKA(X, Y) = ‖YᵀX‖_F² / (‖XᵀX‖_F · ‖YᵀY‖_F),

    on column-centred X (n×p₁) and Y (n×p₂), whose rows are the same n examples. In [0, 1];
    1 for X = Y. Invariant to orthogonal transforms and isotropic scaling of either side, not to
    arbitrary invertible linear maps. For one feature on each side it is the squared Pearson
    correlation.
    """
    a, b = _features(x, "x"), _features(y, "y")
    if len(a) != len(b):
        raise DataError(f"x has {len(a)} rows but y has {len(b)}; rows must be the same examples in both")
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    if max(a.shape[1], b.shape[1]) > len(a):  # wide (e.g. flattened conv maps): the n×n Gram form is cheaper
        k, l = a @ a.T, b @ b.T  # ‖YᵀX‖² = tr(KL), ‖XᵀX‖ = ‖K‖, ‖YᵀY‖ = ‖L‖
        norm_a, norm_b, cross = np.linalg.norm(k), np.linalg.norm(l), float(np.sum(k * l))
    else:
        norm_a, norm_b = np.linalg.norm(a.T @ a), np.linalg.norm(b.T @ b)
        cross = float(np.linalg.norm(b.T @ a) ** 2)
    if norm_a == 0 or norm_b == 0:
        raise DataError(f"{'x' if norm_a == 0 else 'y'} is constant over the examples, so CKA is undefined; "
                        "pass representations that vary across examples")
    return float(cross / (norm_a * norm_b))
