"""Per-patient score tables (CSV), their JSON summary and headline, shared by predict.py and
`brainseg.evaluate` (metrics and empty-volume conventions: brainseg.metrics.functional)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.evaluation.folds import Split
from brainseg.metrics import COUNTS, METRICS, NSD_TOLERANCE
from brainseg.metrics.uncertainty import flags_failures
from brainseg.reporting.figures import FAILURES_FILE, FailureCase, bar_chart, failure_gallery
from brainseg.runfiles import (
    PATIENT_COLUMN,
    SCORES_SUMMARY_FILE,
    SUBSET_COLUMN,
    score_columns,
    write_json,
    write_scores_table,
)

# Where the probabilities are known (predict.py), each patient's uncertainty score
# (brainseg.metrics.uncertainty) is a column too.
UNCERTAINTY_COLUMN = "uncertainty"
METRIC_COLUMNS = [*METRICS, *COUNTS, UNCERTAINTY_COLUMN]
# Which patients a score may be trusted on: the headline is over the held-out ones only.
SUBSETS = ("train", "val", "test", "unseen")
HELD_OUT = ("val", "test", "unseen")
UNITS = (
    "distances (hd95, assd, nsd tolerance) in pixels of the mask grid with slices as an axis of "
    "spacing 1: the data carries no voxel spacing"
)


def summarize(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    figures = {"mean": array.mean(), "median": np.median(array), "std": array.std()}
    return {**{key: float(value) for key, value in figures.items()}, "n": len(values)}


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The score columns these rows hold, in table order."""
    return [c for c in METRIC_COLUMNS if c in rows[0]]


def write_scores(
    rows: list[dict[str, Any]],
    out_dir: Path,
    tolerance: float = NSD_TOLERANCE,
    note: str | None = None,
    cases: Sequence[FailureCase] = (),
) -> dict[str, Any]:
    """Write dsc.csv, dsc_summary.json (returned), dsc.png and, given `cases`, failures.png."""
    write_scores_table(out_dir, rows, score_columns(rows, metric_columns(rows)))
    summary = {**subset_summary(rows), "units": UNITS, "nsd_tolerance": tolerance}
    held_out = [r for r in rows if r[SUBSET_COLUMN] in HELD_OUT]
    if held_out and UNCERTAINTY_COLUMN in held_out[0]:
        summary["uncertainty_flags_failures"] = flags_failures(
            [r[UNCERTAINTY_COLUMN] for r in held_out], [r["dsc"] for r in held_out]
        )
    if cases:
        failure_gallery(list(cases), out_dir / FAILURES_FILE)
    write_json(out_dir / SCORES_SUMMARY_FILE, summary)
    dice = {r[PATIENT_COLUMN]: r["dsc"] for r in rows}
    groups = {r[PATIENT_COLUMN]: r[SUBSET_COLUMN] for r in rows}
    bar_chart(dice, out_dir / "dsc.png", groups=groups, stats_groups=HELD_OUT, note=note)
    return summary


def patient_subset(patient: str, splits: Sequence[Split]) -> str:
    """`train` if any of these members trained on the patient, else `val` or `test` as one of them
    recorded it, else `unseen`."""
    for subset in SUBSETS[:-1]:
        if any(patient in (split.get(subset) or ()) for split in splits):
            return subset
    return "unseen"


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


def headline(
    scores: dict[str, Any], steps: list[dict[str, Any]], out: Path, caveat: str = ""
) -> str:
    """The log line: held-out patients only, training patients said to be left out."""
    trained = scores["by_subset"].get("train", {}).get("dsc", {}).get("n", 0)
    left_out = f"; {trained} training patient(s) left out (see dsc_summary.json)" if trained else ""
    flags = scores.get("uncertainty_flags_failures")  # said as it is, however weak
    flagged = ""
    if flags:
        failed, below = f"{flags['failures']} of {flags['n']} patients", flags["failure_dice_below"]
        auroc, rho = flags["auroc_for_failure"], flags["spearman_with_dice"]
        spearman = "-" if rho is None else f"{rho:.2f}"
        flagged = f"; uncertainty not judged: {failed} below Dice {below}"
        if auroc is not None:
            flagged = f"; uncertainty flags Dice < {below} with AUROC {auroc:.2f} ({failed}; "
            flagged += f"Spearman with Dice {spearman})"
    if not scores["n_held_out"]:
        return (
            f"no held-out patients to score: all {trained} were seen in training "
            f"(see dsc_summary.json); {out}"
        )
    return (
        f"per-volume DSC over {scores['n_held_out']} held-out patients: "
        f"mean {scores['dsc']['mean']:.4f}, median {scores['dsc']['median']:.4f} "
        f"(postprocessing={[s['name'] for s in steps]}){left_out}"
        f"{f'; {caveat}' if caveat else ''}{flagged}; {out}"
    )
