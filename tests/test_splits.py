"""Cross-validation folds (data/splits.py, ``data.<set>.fold``): complementary, stratified, and never splitting a
group (a speaker, a set of byte-identical duplicate images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.config import DomainConfig
from transferlab.data.datasets import ArrayDataset
from transferlab.data.splits import fold_groups, kfold_test_indices, select_fold
from transferlab.errors import DataError
from transferlab.experiment import load_domain

DATA = Path(os.environ.get("TRANSFERLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def toy(n=60, duplicates=True):
    rng = np.random.default_rng(0)
    y = torch.tensor([i % 3 for i in range(n)])
    groups = -np.ones(n, dtype=np.int64)
    if duplicates:
        groups[[0, 7, 14]] = 0  # three copies of one image, one duplicate pair
        groups[[3, 30]] = 1
    extras = {"duplicate_group": groups, "speaker": np.array([f"s{i % 12}" for i in range(n)])}
    return ArrayDataset(torch.from_numpy(rng.standard_normal((n, 4)).astype(np.float32)), y, "toy", "all", 3,
                        extras=extras)


def test_the_folds_partition_the_rows_and_train_is_the_complement_of_test():
    data = toy()
    tests = kfold_test_indices(data.y.numpy(), fold_groups(data), 5, seed=0)
    assert sorted(np.concatenate(tests).tolist()) == list(range(len(data)))  # every row in exactly one test fold
    for index in range(5):
        train = select_fold(data, 5, index, "train").x
        test = select_fold(data, 5, index, "test").x
        assert len(train) + len(test) == len(data)
        assert not set(map(tuple, train.tolist())) & set(map(tuple, test.tolist()))
        counts = np.bincount(select_fold(data, 5, index, "test").y.numpy(), minlength=3)
        assert counts.max() - counts.min() <= 1  # stratified: 4 of each class per fold


def test_duplicates_and_speakers_never_straddle_folds():
    data = toy()
    for seed in (0, 1, 2):
        for index in range(5):
            test = select_fold(data, 5, index, "test", seed=seed)
            train = select_fold(data, 5, index, "train", seed=seed)
            for group in (0, 1):
                inside = (test.extras["duplicate_group"] == group).sum()
                assert inside in (0, (data.extras["duplicate_group"] == group).sum())
            by_speaker = select_fold(data, 5, index, "test", seed=seed, group="speaker")
            rest = select_fold(data, 5, index, "train", seed=seed, group="speaker")
            assert not set(by_speaker.extras["speaker"]) & set(rest.extras["speaker"])
            assert len(train) + len(test) == len(data)


def test_the_seed_changes_the_partition_and_a_bad_fold_is_refused():
    data = toy()
    a = kfold_test_indices(data.y.numpy(), fold_groups(data), 5, seed=0)
    b = kfold_test_indices(data.y.numpy(), fold_groups(data), 5, seed=1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(DataError, match="fold.index 5"):
        select_fold(data, 5, 5, "test")
    with pytest.raises(DataError, match="no per-sample column 'site'"):
        select_fold(data, 5, 0, "test", group="site")


@pytest.mark.skipif(not (DATA / "brain_tumor_mri" / "all_64.npz").is_file(), reason="needs the prepared brain_tumor_mri")
def test_brain_mri_duplicate_groups_stay_in_one_fold_through_the_config():
    for index in range(5):
        test = load_domain(DomainConfig(name="brain_tumor_mri", part="all_64",
                                        fold={"index": index, "role": "test", "seed": 1}), DATA, 0)
        train = load_domain(DomainConfig(name="brain_tumor_mri", part="all_64",
                                         fold={"index": index, "role": "train", "seed": 1}), DATA, 0)
        assert len(test) + len(train) == 253
        shared = set(test.extras["duplicate_group"].tolist()) & set(train.extras["duplicate_group"].tolist())
        assert shared <= {-1}, shared  # no duplicate group on both sides
