"""Patient-wise splits: the reference's exact validation sample, k-fold coverage, explicit lists."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from helpers import SHARED_DATA

from brainseg.data.splits import Split, SplitConfig, kfold_split, make_split, reference_split
from brainseg.errors import ConfigError

# What the reference program (random.seed(42); random.sample(sorted(names), 10)) picks on all 110
# patients.
REFERENCE_VALIDATION = [
    "TCGA_HT_7616_19940813",
    "TCGA_CS_6668_20011025",
    "TCGA_CS_4944_20010208",
    "TCGA_HT_7879_19981009",
    "TCGA_DU_7014_19860618",
    "TCGA_DU_6408_19860521",
    "TCGA_DU_6404_19850629",
    "TCGA_DU_5851_19950428",
    "TCGA_CS_6667_20011105",
    "TCGA_HT_7692_19960724",
]
NAMES = [f"TCGA_XX_{i:04d}_20000101" for i in range(23)]


def test_reference_split_reproduces_the_reference_program() -> None:
    listing = SHARED_DATA / "lgg-all-patients.txt"
    if not listing.exists():
        pytest.skip(f"{listing} not found: the list of all 110 patient folders is needed")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    assert len(names) == 110
    shuffled = names[::-1]  # input order must not matter
    split = reference_split(shuffled)
    assert split.val == REFERENCE_VALIDATION
    random.seed(42)
    assert split.val == random.sample(sorted(names), 10)
    assert sorted(split.train + split.val) == sorted(names) and len(split.train) == 100


def test_kfold_validates_every_patient_exactly_once() -> None:
    folds = [kfold_split(NAMES, 5, k, seed=3) for k in range(5)]
    validated = [n for f in folds for n in f.val]
    assert sorted(validated) == sorted(NAMES)
    assert all(
        not set(f.train) & set(f.val) and len(f.train) + len(f.val) == len(NAMES) for f in folds
    )
    assert {len(f.val) for f in folds} == {4, 5}
    assert kfold_split(NAMES, 5, 2, seed=3) == folds[2]
    assert kfold_split(NAMES, 5, 2, seed=4) != folds[2]


def test_explicit_and_test_lists() -> None:
    split = make_split(
        SplitConfig("explicit", val_patients=NAMES[:2], test_patients=NAMES[2:4]), NAMES
    )
    assert split.val == NAMES[:2] and split.test == NAMES[2:4] and split.train == NAMES[4:]
    held_out = [n for n in NAMES if n not in reference_split(NAMES, 5).val][:3]
    ref = make_split(SplitConfig(n_val=5, test_patients=held_out), NAMES)
    assert len(ref.test) == 3 and not set(ref.test) & set(ref.train)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: kfold_split(NAMES, 5, 5),
            r"data.split.fold=5 must be in \[0, data.split.n_folds=5\)",
        ),
        (lambda: kfold_split(NAMES[:3], 5, 0), "needs at least 5 patients, found 3"),
        (
            lambda: reference_split(NAMES[:10], 10),
            "needs more than data.split.n_val=10 patients, found 10",
        ),
        (
            lambda: make_split(SplitConfig("explicit", val_patients=["nobody"]), NAMES),
            "unknown patient nobody",
        ),
        (lambda: make_split(SplitConfig("random"), NAMES), "data.split.kind='random' is unknown"),
        (lambda: Split(train=NAMES[:3], val=NAMES[2:4]), "is in both train and val"),
        (
            lambda: SplitConfig.from_mapping({"folds": 3}),
            r"data.split.folds is not a split setting; choose from \['kind'",
        ),
    ],
)
def test_bad_split_settings(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_inner_validation_draws_from_the_folds_training_patients() -> None:
    """n_inner_val: the held-out fold is the test set; validation comes from its training
    patients, seeded per fold; every patient is tested exactly once over the folds."""
    config = SplitConfig("kfold", n_folds=5, seed=3, n_inner_val=3)
    folds = [make_split(replace(config, fold=k), NAMES) for k in range(5)]
    for k, split in enumerate(folds):
        plain = kfold_split(NAMES, 5, k, seed=3)
        assert split.test == plain.val and len(split.val) == 3
        assert set(split.val) <= set(plain.train) and set(split.train) == set(plain.train) - set(
            split.val
        )
    assert sorted(n for f in folds for n in f.test) == sorted(NAMES)
    assert len({tuple(f.val) for f in folds}) > 1  # drawn per fold
    assert make_split(replace(config, fold=2), NAMES) == folds[2]
    assert make_split(replace(config, fold=2, seed=4), NAMES).val != folds[2].val


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SplitConfig(n_inner_val=2), "n_inner_val=2 needs data.split.kind=kfold"),
        (
            SplitConfig("kfold", n_inner_val=1, test_patients=NAMES[:1]),
            "without data.split.test_patients",
        ),
        (SplitConfig("kfold", n_folds=2, n_inner_val=11), "fold 0 trains on 11"),
        (SplitConfig("kfold", n_inner_val=-1), "must be at least 1"),
    ],
)
def test_bad_inner_validation_settings(config: SplitConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_split(config, NAMES)
