"""Per-patient Dice in the original geometry, as a CSV table and a JSON summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.metrics import dice_score, largest_connected_component

COLUMNS = ["patient", "subset", "dsc", "dsc_lcc", "dsc_no_lcc", "lesion_voxels", "predicted_voxels", "slices"]


def patient_row(name: str, probs: np.ndarray, truth: np.ndarray, threshold: float, lcc: bool) -> dict[str, Any]:
    """Scores of one patient: with and without the largest-component step, and which one was applied."""
    raw = probs > threshold
    kept = largest_connected_component(raw)
    written = kept if lcc else raw
    return {
        "patient": name,
        "dsc": dice_score(written, truth),
        "dsc_lcc": dice_score(kept, truth),
        "dsc_no_lcc": dice_score(raw, truth),
        "lesion_voxels": int(truth.sum()),
        "predicted_voxels": int(written.sum()),
        "slices": int(truth.shape[0]),
    }


def summarize(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)), "std": float(array.std()), "n": len(values)}


def write_scores(rows: list[dict[str, Any]], out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """`dsc.csv` (one row per patient, with its `subset`) and the given summary as `dsc_summary.json`."""
    with open(out_dir / "dsc.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    (out_dir / "dsc_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
