"""Which patients a prediction may be trusted on: each patient's subset (train / val / test /
unseen) from the checkpoints' recorded splits, and which ensemble members predict it
(out-of-fold: only those that did not train on it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from brainseg.errors import ConfigError
from brainseg.evaluation.folds import Split, held_out_members
from brainseg.reporting.scores import patient_subset

log = logging.getLogger("brainseg")

ENSEMBLE_MODES = ("out_of_fold", "all")


def member_plan(
    splits: Sequence[Split], patients: Iterable[str], mode: str
) -> dict[str, list[int]]:
    """Per patient, the indices of the members that predict it: `out_of_fold`, those that held it
    out (a patient every member trained on: all, reported as seen); `all`, every member."""
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble={mode!r} is unknown; choose one of {list(ENSEMBLE_MODES)}")
    everyone = list(range(len(splits)))
    if mode == "all":
        return {name: everyone for name in patients}
    return {name: held or everyone for name, held in held_out_members(splits, patients).items()}


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
