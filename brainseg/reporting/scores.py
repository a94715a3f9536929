"""Per-patient score tables (CSV) and their JSON summary, shared by predict.py and `brainseg.evaluate`.

The metrics and their empty-volume conventions are those of brainseg.evaluation.volume_metrics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.evaluation.volume_metrics import NSD_TOLERANCE, volume_metrics
from brainseg.metrics import dice_score, largest_connected_component

METRIC_COLUMNS = ["dsc", "hd95", "assd", "nsd", "volume_difference", "lesion_recall", "lesion_precision",
                  "lesions_true", "lesions_predicted", "lesions_found", "lesions_hit"]
VOLUME_COLUMNS = ["lesion_voxels", "predicted_voxels", "slices"]
LCC_COLUMNS = ["dsc_lcc", "dsc_no_lcc"]
UNITS = ("distances (hd95, assd, nsd tolerance) in pixels of the mask grid with slices as an axis of spacing 1: "
         "the data carries no voxel spacing")


def score_row(name: str, pred: np.ndarray, truth: np.ndarray, tolerance: float = NSD_TOLERANCE) -> dict[str, Any]:
    """Every metric of one patient's written mask against its truth."""
    return {"patient": name, **volume_metrics(pred, truth, tolerance), "lesion_voxels": int(truth.sum()),
            "predicted_voxels": int(pred.sum()), "slices": int(truth.shape[0])}


def patient_row(name: str, probs: np.ndarray, truth: np.ndarray, threshold: float, lcc: bool) -> dict[str, Any]:
    """Scores of one patient's written mask, plus its Dice with and without the largest-component step."""
    raw = probs > threshold
    kept = largest_connected_component(raw)
    row = score_row(name, kept if lcc else raw, truth)
    return {**row, "dsc_lcc": dice_score(kept, truth), "dsc_no_lcc": dice_score(raw, truth)}


def summarize(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)), "std": float(array.std()), "n": len(values)}


def write_scores(rows: list[dict[str, Any]], out_dir: Path, tolerance: float = NSD_TOLERANCE) -> dict[str, Any]:
    """`dsc.csv` (one row per patient, every metric) and `dsc_summary.json` (mean, median, std of each)."""
    metrics = [c for c in METRIC_COLUMNS[:1] + LCC_COLUMNS + METRIC_COLUMNS[1:] if c in rows[0]]
    columns = ["patient", *metrics, *VOLUME_COLUMNS]
    with open(out_dir / "dsc.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in columns})
    summary: dict[str, Any] = {key: summarize([r[key] for r in rows]) for key in metrics}
    summary["units"] = UNITS
    summary["nsd_tolerance"] = tolerance
    (out_dir / "dsc_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
