"""Honest cross-validation: which epoch a run reports (a rule that does not select on the scored
patients, or says it does), and which member held out which patient (docs/sweeps.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from brainseg.errors import ConfigError
from brainseg.runfiles import RunMetrics, Selected

Split = Mapping[str, Sequence[str]]  # {"train": [...], "val": [...], "test": [...]} as recorded

SELECTION_RULES = {
    "last": "last epoch (not selected on the scored patients)",
    "best_on_val": (
        "best epoch on the scored validation patients (selected on validation: optimistic)"
    ),
}
INNER_VAL = "inner_val"
CV_RULES = {
    **SELECTION_RULES,
    INNER_VAL: (
        "checkpoint with the best Dice on data.split.n_inner_val validation patients drawn from "
        "the fold's training patients; the fold's held-out patients scored once as its test set "
        "(they select nothing)"
    ),
}


def inner_validation(config: Mapping[str, Any]) -> bool:
    """Whether a run's resolved config asks for the inner-validation rule."""
    return bool(((config.get("data") or {}).get("split") or {}).get("n_inner_val"))


def check_selection(rule: str) -> str:
    """The rule, or a ConfigError naming the valid ones."""
    if rule not in SELECTION_RULES:
        raise ConfigError(
            f"evaluation.selection={rule!r} is unknown; choose one of {list(SELECTION_RULES)}"
        )
    return rule


def reported_scores(metrics: RunMetrics) -> Selected | None:
    """The scores a run contributes to a sweep: under the inner-validation rule its test scores
    (the held-out patients), otherwise its validation scores under its selection rule."""
    test = metrics.test
    if test is not None and test.rule == INNER_VAL:
        return test.as_selected()
    return metrics.selected


def held_out_members(splits: Sequence[Split], patients: Iterable[str]) -> dict[str, list[int]]:
    """Per patient, the indices of the members whose split does not list it under `train` (a
    member that records no split holds every patient out)."""
    trained = [set(split.get("train") or ()) for split in splits]
    return {name: [i for i, seen in enumerate(trained) if name not in seen] for name in patients}
