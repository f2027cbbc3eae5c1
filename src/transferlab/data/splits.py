"""k-fold cross-validation splits of one dataset, for small data (the brain-MRI set, speechocean762's speakers): the
folds are stratified by label and grouped, so rows that must not be split (a speaker's utterances, byte-identical
duplicate images) always land in one fold. scikit-learn's ``StratifiedGroupKFold`` makes the split; the seed shuffles
which groups go to which fold, so repeating the cross-validation over seeds gives different partitions.

``data.<set>.fold: {k: 5, index: 0, role: test, group: speaker}`` selects one fold (``role: test``) or the other k-1
(``role: train``) when a set is loaded. With ``validation: true`` fold ``(index + 1) % k`` is held out as well, as the
validation fold (``role: val``, e.g. to fit a temperature on), and ``role: train`` keeps the other k-2 folds; the test
fold is the same with or without it. Without ``group``, a ``duplicate_group`` column (-1 = a unique row, else the id
of a group of identical images; docs/data.md) groups the duplicates, so an image never appears in two roles.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError


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


ROLES = ("train", "val", "test")


def fold_rows(labels: np.ndarray | None, groups: np.ndarray, k: int, index: int, role: str, seed: int = 0,
              validation: bool = False) -> np.ndarray:
    """The sorted row indices of ``role`` for fold ``index`` of ``k``: ``test`` the rows of fold ``index``; ``val``
    (only with ``validation``) those of fold ``(index + 1) % k``; ``train`` every other row (k-1 folds, k-2 with
    ``validation``)."""
    check_fold(k, index, role, validation)
    folds = kfold_test_indices(labels, groups, k, seed)
    if role == "test":
        return folds[index]
    if role == "val":
        return folds[(index + 1) % k]
    held = np.concatenate([folds[index], folds[(index + 1) % k]]) if validation else folds[index]
    return np.setdiff1d(np.arange(len(groups)), held)


def check_fold(k: int, index: int, role: str, validation: bool = False) -> None:
    """A clear error for a fold selection that cannot be made (before any data is read)."""
    if role not in ROLES:
        raise ConfigError(f"fold.role '{role}' is not one of {', '.join(ROLES)}")
    if role == "val" and not validation:
        raise ConfigError("fold.role: val needs fold.validation: true (the validation fold is fold (index + 1) % k, "
                          "held out of training)")
    if validation and k < 3:
        raise ConfigError(f"fold.validation needs k >= 3 (a test fold, a validation fold and at least one training "
                          f"fold); k is {k}")
    if not 0 <= index < k:
        raise DataError(f"fold.index {index} is not one of the {k} folds (0..{k - 1})")


def select_fold(dataset, k: int, index: int, role: str, seed: int = 0, group: str | None = None,
                validation: bool = False):
    """The rows of fold ``index`` of ``k`` (``role="test"``), of the validation fold ``(index + 1) % k``
    (``role="val"``, needs ``validation``) or of the other folds (``role="train"``: k-1 folds, k-2 with
    ``validation``)."""
    labels = dataset.y.numpy() if dataset.y is not None else None
    rows = fold_rows(labels, fold_groups(dataset, group), k, index, role, seed, validation)
    return dataset.subset(torch.from_numpy(rows.astype(np.int64)))
