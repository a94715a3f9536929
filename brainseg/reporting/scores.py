"""Per-patient Dice in the original geometry, as a CSV table and a JSON summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.metrics import dice_score

COLUMNS = ["patient", "subset", "dsc", "dsc_lcc", "dsc_no_lcc", "lesion_voxels", "predicted_voxels", "slices"]


def patient_row(name: str, truth: np.ndarray, written: np.ndarray,
                variants: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Scores of one patient's written mask (`dsc`) and of other masks of it (`dsc_<variant>`,
    e.g. without post-processing); the masks are scored as given."""
    return {
        "patient": name,
        "dsc": dice_score(written, truth),
        **{f"dsc_{variant}": dice_score(mask, truth) for variant, mask in (variants or {}).items()},
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
