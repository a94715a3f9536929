"""Patient-wise splits: the reference's fixed validation sample, k-fold CV, or explicit lists."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from brainseg.errors import ConfigError

SPLIT_KINDS = ("reference", "kfold", "explicit")


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
                    raise ConfigError(f"data.split: patient {name} is in both {seen[name]} and {subset}")
                seen[name] = subset

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


def reference_split(patients: list[str], n_val: int = 10, seed: int = 42) -> Split:
    """The reference program's split: `random.seed(seed); random.sample(sorted(patients), n_val)`."""
    names = sorted(patients)
    if n_val < 1:
        raise ConfigError(
            f"data.n_val={n_val} leaves no validation patients (no best checkpoint, no score); "
            "to train without validation keep data.n_val>=1 and set trainer.limit_val_batches=0"
        )
    if len(names) <= n_val:
        raise ConfigError(
            f"data.split=reference needs more than data.n_val={n_val} patients, found {len(names)}"
        )
    val = random.Random(seed).sample(names, n_val)
    return Split(train=[n for n in names if n not in set(val)], val=val)


def kfold_split(patients: list[str], n_folds: int, fold: int, seed: int = 42) -> Split:
    """Fold `fold` of a seeded shuffle of the patients cut into `n_folds` near-equal parts."""
    if n_folds < 2:
        raise ConfigError(f"data.n_folds={n_folds} must be at least 2")
    if not 0 <= fold < n_folds:
        raise ConfigError(f"data.fold={fold} must be in [0, data.n_folds={n_folds})")
    names = sorted(patients)
    if len(names) < n_folds:
        raise ConfigError(f"data.n_folds={n_folds} needs at least {n_folds} patients, found {len(names)}")
    random.Random(seed).shuffle(names)
    val = names[fold::n_folds]
    return Split(train=sorted(set(names) - set(val)), val=sorted(val))


def explicit_split(patients: list[str], val: list[str], test: list[str], train: list[str] | None) -> Split:
    """Named validation/test lists; training gets the listed or else all remaining patients."""
    known = set(patients)
    for setting, names in (("data.val_patients", val), ("data.test_patients", test), ("data.train_patients", train or [])):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"{setting}: unknown patient {unknown[0]} (not under the data root)")
    if not val:
        raise ConfigError("data.split=explicit needs a non-empty data.val_patients list")
    rest = [n for n in sorted(patients) if n not in set(val) | set(test)]
    split = Split(train=sorted(train) if train else rest, val=list(val), test=list(test))
    if not split.train:
        raise ConfigError("data.split=explicit leaves no training patients")
    return split


def make_split(
    kind: str,
    patients: list[str],
    *,
    n_val: int = 10,
    n_folds: int = 5,
    fold: int = 0,
    seed: int = 42,
    val_patients: list[str] | None = None,
    test_patients: list[str] | None = None,
    train_patients: list[str] | None = None,
) -> Split:
    """Dispatch on `data.split`."""
    if kind == "reference":
        split = reference_split(patients, n_val, seed)
    elif kind == "kfold":
        split = kfold_split(patients, n_folds, fold, seed)
    elif kind == "explicit":
        return explicit_split(patients, list(val_patients or []), list(test_patients or []), train_patients)
    else:
        raise ConfigError(f"data.split={kind!r} is unknown; choose one of {list(SPLIT_KINDS)}")
    if test_patients:
        return explicit_split(patients, split.val, list(test_patients), [n for n in split.train if n not in test_patients])
    return split
