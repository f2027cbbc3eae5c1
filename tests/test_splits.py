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
from transferlab.errors import ConfigError, DataError
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


def test_a_validation_fold_is_held_out_of_training_and_is_never_the_test_fold():
    data = toy()
    rows = lambda subset: set(subset.x[:, 0].tolist())  # noqa: E731  (the toy's features are distinct per row)
    for seed in (0, 1):
        tests = kfold_test_indices(data.y.numpy(), fold_groups(data), 5, seed=seed)
        for index in range(5):
            test, val, train = (select_fold(data, 5, index, role, seed=seed, validation=True)
                                for role in ("test", "val", "train"))
            assert rows(test) == rows(select_fold(data, 5, index, "test", seed=seed))  # validation leaves test alone
            np.testing.assert_array_equal(val.x, data.x[tests[(index + 1) % 5]])  # the next fold, not the test fold
            assert not rows(val) & rows(test) and not rows(train) & rows(test) and not rows(train) & rows(val)
            assert len(train) + len(val) + len(test) == len(data)  # disjoint and covering
            assert rows(train) == rows(data) - rows(test) - rows(val)
            for group in (0, 1):  # a duplicate group lies in exactly one of the three
                where = [int((s.extras["duplicate_group"] == group).sum()) for s in (train, val, test)]
                assert sorted(where)[:2] == [0, 0], where
    with_speakers = [select_fold(data, 5, 2, role, seed=1, group="speaker", validation=True).extras["speaker"]
                     for role in ("train", "val", "test")]
    assert not (set(with_speakers[0]) & set(with_speakers[1]) or set(with_speakers[0]) & set(with_speakers[2])
                or set(with_speakers[1]) & set(with_speakers[2]))


def test_role_val_without_validation_and_validation_with_two_folds_are_config_errors():
    data = toy()
    with pytest.raises(ConfigError, match="role: val needs fold.validation"):
        select_fold(data, 5, 0, "val")
    with pytest.raises(ConfigError, match="needs k >= 3"):
        select_fold(data, 2, 0, "train", validation=True)
    with pytest.raises(ConfigError, match="fold.role 'dev'"):
        select_fold(data, 5, 0, "dev")
    assert len(select_fold(data, 2, 1, "train")) + len(select_fold(data, 2, 1, "test")) == len(data)


@pytest.mark.skipif(not (DATA / "brain_tumor_mri" / "all_64.npz").is_file(), reason="needs the prepared brain_tumor_mri")
def test_brain_mri_validation_fold_through_the_config():
    sets = {role: load_domain(DomainConfig(name="brain_tumor_mri", part="all_64",
                                           fold={"index": 4, "role": role, "seed": 2, "validation": True}), DATA, 0)
            for role in ("train", "val", "test")}
    assert sum(len(s) for s in sets.values()) == 253
    names = {role: set(s.extras["names"].tolist()) for role, s in sets.items()}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    groups = {role: set(s.extras["duplicate_group"].tolist()) - {-1} for role, s in sets.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    first = load_domain(DomainConfig(name="brain_tumor_mri", part="all_64", fold={"index": 0, "role": "test", "seed": 2}),
                        DATA, 0)
    assert names["val"] == set(first.extras["names"].tolist())  # fold (4 + 1) % 5 = 0
    with pytest.raises(ConfigError, match="role: val needs"):
        load_domain(DomainConfig(name="brain_tumor_mri", part="all_64", fold={"index": 0, "role": "val"}), DATA, 0)
