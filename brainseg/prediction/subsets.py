"""Which patients a prediction may be trusted on: each patient's subset (train / val / test /
unseen) from the checkpoints' recorded splits, and which ensemble members predict it
(out-of-fold: only those that did not train on it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from brainseg.errors import ConfigError
from brainseg.evaluation.folds import Split, held_out_members
from brainseg.reporting.scores import metric_columns, summarize
from brainseg.runfiles import SUBSET_COLUMN

log = logging.getLogger("brainseg")

ENSEMBLE_MODES = ("out_of_fold", "all")
SUBSETS = ("train", "val", "test", "unseen")
HELD_OUT = ("val", "test", "unseen")


def member_plan(
    splits: Sequence[Split], patients: Iterable[str], mode: str
) -> dict[str, list[int]]:
    """Per patient, the indices of the members that predict it.

    `out_of_fold`: the members that held the patient out (all of them for a patient none trained
    on); a patient that every member trained on falls back to all members, and is reported by
    `seen_in_training`. `all`: every member for every patient.
    """
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble={mode!r} is unknown; choose one of {list(ENSEMBLE_MODES)}")
    everyone = list(range(len(splits)))
    if mode == "all":
        return {name: everyone for name in patients}
    return {name: held or everyone for name, held in held_out_members(splits, patients).items()}


def patient_subset(patient: str, splits: Sequence[Split]) -> str:
    """`train` if any of these members trained on the patient, else `val` or `test` as one of them
    recorded it, else `unseen`."""
    for subset in SUBSETS[:-1]:
        if any(patient in (split.get(subset) or ()) for split in splits):
            return subset
    return "unseen"


def subsets_for(plan: Mapping[str, Sequence[int]], splits: Sequence[Split]) -> dict[str, str]:
    """Each patient's subset with respect to the members that predict it."""
    return {name: patient_subset(name, [splits[i] for i in used]) for name, used in plan.items()}


def warn_seen_in_training(subsets: Mapping[str, str]) -> list[str]:
    """Log one line naming the scored patients that a member predicting them trained on."""
    seen = sorted(name for name, subset in subsets.items() if subset == "train")
    if seen:
        log.warning(
            "%d scored patient(s) were seen in training by a member that predicts them "
            "(reported as subset=train, left out of the headline): %s",
            len(seen),
            ", ".join(seen),
        )
    return seen


def subset_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean/median/std of each metric over the held-out patients (top level, the headline), and
    per subset plus over all patients under `by_subset`."""

    keys = metric_columns(list(rows)) if rows else []

    def scores(selected: list[Mapping[str, Any]]) -> dict[str, Any]:
        return {key: summarize([r[key] for r in selected]) for key in keys} if selected else {}

    held_out = [r for r in rows if r[SUBSET_COLUMN] in HELD_OUT]
    by_subset = {s: scores([r for r in rows if r[SUBSET_COLUMN] == s]) for s in SUBSETS}
    return {
        "patients": "held_out",
        "held_out_subsets": list(HELD_OUT),
        "n_held_out": len(held_out),
        **scores(held_out),
        "by_subset": {**{s: v for s, v in by_subset.items() if v}, "all": scores(list(rows))},
    }
