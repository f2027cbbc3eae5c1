"""Diagnostics of why (and whether) transfer works; see docs/analysis.md.

* :mod:`.divergence`: proxy A-distance and joint error λ (Ben-David et al.'s bound).
* :mod:`.scores`: transferability scores LogME, LEEP, NCE, H-score, TransRate, and weighted τ.
* :mod:`.task2vec`: Fisher-information task embeddings and distances.
* :mod:`.landscape`: loss interpolation, 2-D slices and sharpness.
* :mod:`.similarity`: linear CKA between representations.
"""

from .divergence import joint_error, proxy_a_distance
from .landscape import filter_normalized_direction, interpolate, sharpness, slice_2d
from .scores import h_score, leep, logme, nce, transrate, weighted_kendall_tau
from .similarity import linear_cka
from .task2vec import distance_matrix, fisher_diagonal, task_distance, task_embedding

__all__ = [
    "joint_error", "proxy_a_distance",
    "filter_normalized_direction", "interpolate", "sharpness", "slice_2d",
    "h_score", "leep", "logme", "nce", "transrate", "weighted_kendall_tau",
    "linear_cka",
    "distance_matrix", "fisher_diagonal", "task_distance", "task_embedding",
]
