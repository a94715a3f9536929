"""Per-patient score tables (CSV) and their JSON summary, shared by predict.py and
`brainseg.evaluate`.

The metrics and their empty-volume conventions are those of brainseg.metrics.functional.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.metrics import COUNTS, METRICS, NSD_TOLERANCE, dice_score, volume_metrics
from brainseg.runfiles import (
    PATIENT_COLUMN,
    SCORES_SUMMARY_FILE,
    VOLUME_COLUMNS,
    score_columns,
    write_scores_table,
)

METRIC_COLUMNS = [*METRICS, *COUNTS]
UNITS = (
    "distances (hd95, assd, nsd tolerance) in pixels of the mask grid "
    "with slices as an axis of spacing 1: "
    "the data carries no voxel spacing"
)


def patient_row(
    name: str,
    truth: np.ndarray,
    written: np.ndarray,
    variants: Mapping[str, np.ndarray] | None = None,
    tolerance: float = NSD_TOLERANCE,
) -> dict[str, Any]:
    """Every metric of one patient's written mask, and the Dice of other masks of it
    (`dsc_<variant>`, e.g. without post-processing); the masks are scored as given."""
    return {
        PATIENT_COLUMN: name,
        **volume_metrics(written, truth, tolerance),
        **{f"dsc_{variant}": dice_score(mask, truth) for variant, mask in (variants or {}).items()},
        **dict(zip(VOLUME_COLUMNS, (int(truth.sum()), int(written.sum()), int(truth.shape[0])))),
    }


def summarize(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "std": float(array.std()),
        "n": len(values),
    }


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The score columns these rows hold: Dice, its variants (`dsc_<variant>`),
    then the other metrics."""
    variants = [c for c in rows[0] if c.startswith("dsc_")]
    return [c for c in (METRIC_COLUMNS[0], *variants, *METRIC_COLUMNS[1:]) if c in rows[0]]


def write_scores(
    rows: list[dict[str, Any]],
    out_dir: Path,
    tolerance: float = NSD_TOLERANCE,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`dsc.csv` (one row per patient, every metric, and its `subset` where known) and
    `dsc_summary.json`: the given summary (e.g. per subset), else mean, median, std of each
    metric."""
    metrics = metric_columns(rows)
    write_scores_table(out_dir, rows, score_columns(rows, metrics))
    summary = (
        dict(summary)
        if summary is not None
        else {key: summarize([r[key] for r in rows]) for key in metrics}
    )
    summary["units"] = UNITS
    summary["nsd_tolerance"] = tolerance
    (out_dir / SCORES_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
