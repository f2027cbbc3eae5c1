"""k-fold cross-validation splits of one dataset, for small data (the brain-MRI set, speechocean762's speakers): the
folds are stratified by label and grouped, so rows that must not be split (a speaker's utterances, byte-identical
duplicate images) always land in one fold. scikit-learn's ``StratifiedGroupKFold`` makes the split; the seed shuffles
which groups go to which fold, so repeating the cross-validation over seeds gives different partitions.

``data.<set>.fold: {k: 5, index: 0, role: test, group: speaker}`` selects one fold (``role: test``) or the other k-1
(``role: train``) when a set is loaded. Without ``group``, a ``duplicate_group`` column (-1 = a unique row, else the id
of a group of identical images; docs/data.md) groups the duplicates, so an image never appears in both.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError


def fold_groups(dataset, column: str | None = None) -> np.ndarray:
    """One group id per row: the values of ``column``; without one, ``duplicate_group`` (its -1 rows each their own
    group), else every row its own group."""
    n = len(dataset)
    name = column or ("duplicate_group" if "duplicate_group" in dataset.extras else None)
    if name is None:
        return np.arange(n)
    values = dataset.extras.get(name)
    if values is None or getattr(values, "ndim", 0) != 1 or len(values) != n:
        raise DataError(f"fold.group: {dataset.name}/{dataset.part} has no per-sample column '{name}'; its columns "
                        f"are {sorted(k for k, v in dataset.extras.items() if getattr(v, 'ndim', 0) == 1)}")
    if name == "duplicate_group" and column is None:
        values = np.asarray(values).astype(np.int64)
        unique = values < 0
        out = values.copy()
        out[unique] = values.max(initial=0) + 1 + np.arange(int(unique.sum()))
        return out
    _, ids = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return ids


def kfold_test_indices(labels: np.ndarray | None, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The test rows of each of ``k`` folds: stratified by ``labels`` (when given) and grouped by ``groups``."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n = len(groups)
    if len(np.unique(groups)) < k:
        raise DataError(f"{k}-fold cross-validation needs at least {k} groups; there are {len(np.unique(groups))}")
    if labels is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(n), labels, groups)
    else:
        order = np.random.default_rng(seed).permutation(np.unique(groups))  # GroupKFold does not shuffle
        rank = {g: i for i, g in enumerate(order)}
        splits = GroupKFold(n_splits=k).split(np.zeros(n), None, np.array([rank[g] for g in groups]))
    return [np.sort(test) for _, test in splits]


def select_fold(dataset, k: int, index: int, role: str, seed: int = 0, group: str | None = None):
    """The rows of fold ``index`` of ``k`` (``role="test"``) or of the other folds (``role="train"``)."""
    if not 0 <= index < k:
        raise DataError(f"fold.index {index} is not one of the {k} folds (0..{k - 1})")
    labels = dataset.y.numpy() if dataset.y is not None else None
    test = kfold_test_indices(labels, fold_groups(dataset, group), k, seed)[index]
    rows = test if role == "test" else np.setdiff1d(np.arange(len(dataset)), test)
    return dataset.subset(torch.from_numpy(rows.astype(np.int64)))
