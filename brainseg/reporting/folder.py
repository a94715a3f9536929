"""Score a folder of predicted masks against a folder of truth masks (kaggle_3m layout), as
nnU-Net's evaluate_folder does: masks from any program, scored with predict.py's own tables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from brainseg.data.reader import read_mask
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import NSD_TOLERANCE
from brainseg.postprocessing import apply, check_steps
from brainseg.reporting.figures import bar_chart
from brainseg.reporting.scores import patient_row, write_scores
from brainseg.runfiles import PATIENT_COLUMN

_MASK_RE = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)_mask\.tif$")


def mask_files(root: Path) -> dict[str, dict[int, Path]]:
    """patient -> slice number -> `<patient>_<n>_mask.tif`, for every patient folder under root."""
    if not root.is_dir():
        raise DataError(f"{root}: mask folder not found")
    patients = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        slices = {
            int(m["n"]): p
            for p in folder.iterdir()
            if (m := _MASK_RE.match(p.name)) and m["patient"] == folder.name
        }
        if slices:
            patients[folder.name] = slices
    if not patients:
        raise DataError(
            f"{root}: no patient folders with <patient>_<n>_mask.tif files (kaggle_3m layout)"
        )
    return patients


def _read_volume(slices: dict[int, Path], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A patient's masks stacked in slice order, all of `shape` (default: the first mask's)."""
    numbers = sorted(slices)
    if shape is None:
        shape = tifffile.imread(slices[numbers[0]]).shape[:2]
    return np.stack([read_mask(slices[n], shape) for n in numbers]).astype(bool)


def paired_volumes(pred_root: Path, truth_root: Path):
    """Yield (patient, prediction, truth) volumes; any missing patient or slice, or a shape that
    differs from the truth's, stops with one line naming the file."""
    predicted, truths = mask_files(pred_root), mask_files(truth_root)
    for name in sorted(set(truths) | set(predicted)):
        if name not in predicted:
            raise DataError(
                f"{pred_root / name}: no predicted masks for patient {name} "
                f"(it has truth masks in {truth_root})"
            )
        if name not in truths:
            raise DataError(
                f"{pred_root / name}: patient {name} has no truth masks in {truth_root}"
            )
        for number in sorted(set(truths[name]) ^ set(predicted[name])):
            missing_in = pred_root if number in truths[name] else truth_root
            raise DataError(
                f"{missing_in / name / f'{name}_{number}_mask.tif'}: slice {number} is missing"
            )
    for name in sorted(truths):
        truth = _read_volume(truths[name])
        pred = _read_volume(predicted[name], truth.shape[1:])
        yield name, pred, truth


def evaluate_folder(
    pred_root: str | Path,
    truth_root: str | Path,
    output_dir: str | Path,
    postprocessing: list[str] | None = None,
    tolerance: float = NSD_TOLERANCE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `dsc.csv`, `dsc_summary.json`, `dsc.png` and `evaluation.json` into output_dir."""
    pred_root, truth_root, out = (Path(p).resolve() for p in (pred_root, truth_root, output_dir))
    steps = check_steps(postprocessing, setting="--postprocessing")
    for root in (pred_root, truth_root):
        if out == root or out.is_relative_to(root):
            raise ConfigError(f"--output {out} is inside the input {root}; choose another folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ConfigError(
            f"--output {out} is not an empty folder; choose another or pass --overwrite"
        )
    rows = []
    for name, pred, truth in paired_volumes(pred_root, truth_root):
        rows.append(patient_row(name, truth, apply(pred, steps), tolerance=tolerance))
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "predictions": str(pred_root),
        "truth": str(truth_root),
        "postprocessing": steps,
        "patients": len(rows),
        "scores": write_scores(rows, out, tolerance),
    }
    bar_chart({r[PATIENT_COLUMN]: r["dsc"] for r in rows}, out / "dsc.png")
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    return summary
