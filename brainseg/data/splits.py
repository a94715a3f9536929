"""Patient-wise splits: the reference's fixed validation sample, k-fold CV, or explicit lists."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from brainseg.errors import ConfigError

SPLIT_KINDS = ("reference", "kfold", "explicit")


@dataclass(frozen=True)
class SplitConfig:
    """The `data.split` settings, spelled once for the config group, DataModule and make_split."""

    kind: str = "reference"
    n_val: int = 10
    n_folds: int = 5
    fold: int = 0
    seed: int = 42
    n_inner_val: int = 0
    val_patients: list[str] | None = None
    test_patients: list[str] | None = None
    train_patients: list[str] | None = None

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None) -> SplitConfig:
        """From the `data.split` mapping; an unknown key is a ConfigError listing the valid ones."""
        settings = dict(settings or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise ConfigError(
                f"data.split.{unknown[0]} is not a split setting; choose from {valid}"
            )
        return cls(**settings)


@dataclass(frozen=True)
class Split:
    """Disjoint patient lists; `test` may be empty."""

    train: list[str]
    val: list[str]
    test: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for subset in ("train", "val", "test"):
            for name in getattr(self, subset):
                if name in seen:
                    raise ConfigError(
                        f"data.split: patient {name} is in both {seen[name]} and {subset}"
                    )
                seen[name] = subset


def reference_split(patients: list[str], n_val: int = 10, seed: int = 42) -> Split:
    """The reference program's split: `random.Random(seed).sample(sorted(patients), n_val)`."""
    names = sorted(patients)
    if n_val < 1:
        raise ConfigError(
            f"data.split.n_val={n_val} leaves no validation patients "
            "(no best checkpoint, no score); to train without validation "
            "keep data.split.n_val>=1 and set trainer.limit_val_batches=0"
        )
    if len(names) <= n_val:
        raise ConfigError(
            f"data.split.kind=reference needs more than data.split.n_val={n_val} patients, "
            f"found {len(names)}"
        )
    val = random.Random(seed).sample(names, n_val)
    return Split(train=[n for n in names if n not in set(val)], val=val)


def kfold_split(
    patients: list[str], n_folds: int, fold: int, seed: int = 42, n_inner_val: int = 0
) -> Split:
    """Fold `fold` of a seeded shuffle cut into `n_folds` near-equal parts, held out to validate;
    with `n_inner_val` >= 1 held out as test, and `n_inner_val` of its training patients validate,
    so that the held-out patients select nothing."""
    if n_folds < 2:
        raise ConfigError(f"data.split.n_folds={n_folds} must be at least 2")
    if not 0 <= fold < n_folds:
        raise ConfigError(f"data.split.fold={fold} must be in [0, data.split.n_folds={n_folds})")
    names = sorted(patients)
    if len(names) < n_folds:
        raise ConfigError(
            f"data.split.n_folds={n_folds} needs at least {n_folds} patients, found {len(names)}"
        )
    random.Random(seed).shuffle(names)
    held_out = sorted(names[fold::n_folds])
    train = sorted(set(names) - set(held_out))
    if n_inner_val == 0:
        return Split(train=train, val=held_out)
    if not 0 < n_inner_val < len(train):
        raise ConfigError(
            f"data.split.n_inner_val={n_inner_val} must be at least 1 and leave training "
            f"patients: fold {fold} trains on {len(train)}"
        )
    inner = sorted(random.Random(f"inner-{seed}-{fold}").sample(train, n_inner_val))
    return Split(train=[n for n in train if n not in inner], val=inner, test=held_out)


def explicit_split(
    patients: list[str], val: list[str], test: list[str], train: list[str] | None
) -> Split:
    """Named validation/test lists; training gets the listed or else all remaining patients."""
    known = set(patients)
    settings = (("val_patients", val), ("test_patients", test), ("train_patients", train or []))
    for setting, names in settings:
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"data.split.{setting}: unknown patient {unknown[0]} (not under the data root)"
            )
    if not val:
        raise ConfigError("data.split.kind=explicit needs a non-empty data.split.val_patients list")
    rest = [n for n in sorted(patients) if n not in set(val) | set(test)]
    split = Split(train=sorted(train) if train else rest, val=list(val), test=list(test))
    if not split.train:
        raise ConfigError("data.split.kind=explicit leaves no training patients")
    return split


def make_split(config: SplitConfig, patients: list[str]) -> Split:
    """Dispatch on `data.split.kind`; `test_patients` are held out of any kind."""
    test = list(config.test_patients or [])
    if config.n_inner_val and (config.kind != "kfold" or test):
        raise ConfigError(
            f"data.split.n_inner_val={config.n_inner_val} needs data.split.kind=kfold without "
            "data.split.test_patients (each fold's held-out patients are its test set)"
        )
    if config.kind == "reference":
        split = reference_split(patients, config.n_val, config.seed)
    elif config.kind == "kfold":
        split = kfold_split(patients, config.n_folds, config.fold, config.seed, config.n_inner_val)
    elif config.kind == "explicit":
        val = list(config.val_patients or [])
        return explicit_split(patients, val, test, config.train_patients)
    else:
        raise ConfigError(
            f"data.split.kind={config.kind!r} is unknown; choose one of {list(SPLIT_KINDS)}"
        )
    if test:
        return explicit_split(patients, split.val, test, [n for n in split.train if n not in test])
    return split
