"""Diagnostics of why (and whether) transfer works; see docs/analysis.md.

Pure functions on features, predictions, datasets and models: nothing here loads a run, trains or
writes files (that is :mod:`transferlab.reports`), and the package imports only from ``errors``,
``validation``, ``registry``, ``data`` and ``models`` (enforced by tests/test_layers.py).

* :mod:`.features`: sampling a dataset; a model's features, logits and per-layer activations on it.
* :mod:`.divergence`: proxy A-distance and joint error λ (Ben-David et al.'s bound).
* :mod:`.scores`: transferability scores LogME, LEEP, NCE, H-score, TransRate, and weighted τ.
* :mod:`.task2vec`: Fisher-information task embeddings and distances.
* :mod:`.landscape`: loss interpolation, 2-D slices and sharpness.
* :mod:`.similarity`: linear CKA between representations.
* :mod:`.ntk`: the empirical neural tangent kernel, kernel regression, kernel-target alignment, kernel movement.
* :mod:`.information`: I(Z; Y) and I(Z; D) by a variational probe bound and a k-NN estimator.
* :mod:`.calibration`: ECE (equal-width and equal-mass bins), reliability diagrams, NLL, AUC, temperature scaling.
* :mod:`.gradcam`: Grad-CAM maps of any convolutional backbone and overlaid PNG sheets.

(``plot_reliability`` and ``gradcam.write_sheet`` write a PNG: the two pictures the medical scenario asks for.)
"""

from .divergence import joint_error, proxy_a_distance
from .information import domain_labels, entropy, knn_mi, variational_mi
from .ntk import empirical_ntk, jacobian_features, kernel_alignment, kernel_distance, kernel_regression
from .features import extract, layer_activations, sample
from .landscape import filter_normalized_direction, interpolate, sharpness, slice_2d
from .scores import h_score, leep, logme, nce, transrate, weighted_kendall_tau
from .similarity import linear_cka
from .task2vec import distance_matrix, fisher_diagonal, probe_head, task_distance, task_embedding

__all__ = [
    "joint_error", "proxy_a_distance",
    "extract", "layer_activations", "sample",
    "filter_normalized_direction", "interpolate", "sharpness", "slice_2d",
    "h_score", "leep", "logme", "nce", "transrate", "weighted_kendall_tau",
    "linear_cka",
    "distance_matrix", "fisher_diagonal", "probe_head", "task_distance", "task_embedding",
    "domain_labels", "entropy", "knn_mi", "variational_mi",
    "empirical_ntk", "jacobian_features", "kernel_alignment", "kernel_distance", "kernel_regression",
]
