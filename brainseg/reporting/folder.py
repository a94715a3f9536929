"""Score a folder of predicted masks from any program against truth masks (kaggle_3m layout), as
nnU-Net's evaluate_folder does, with predict.py's own tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from brainseg.data.reader import read_mask, read_patient, scan_masks, scan_patient
from brainseg.errors import DataError
from brainseg.metrics import NSD_TOLERANCE
from brainseg.paths import resolve_path
from brainseg.postprocessing import apply, check_steps, score
from brainseg.reporting.figures import failure_case
from brainseg.reporting.scores import patient_subset, write_scores
from brainseg.run_lock import claim_output_dir
from brainseg.runfiles import PATIENT_COLUMN, SPLIT_FILE, SUBSET_COLUMN, write_json


def mask_files(root: Path) -> dict[str, dict[int, Path]]:
    """patient folder name -> slice number -> `<prefix>_<n>_mask.tif`, for every patient folder
    under root (predict.py names masks after the images, whatever the folder is called)."""
    if not root.is_dir():
        raise DataError(f"{root}: mask folder not found")
    patients = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        slices = scan_masks(folder)  # the checks of training and predict.py, any file prefix
        if slices:
            patients[folder.name] = slices
    if not patients:
        raise DataError(
            f"{root}: no patient folders with <patient>_<n>_mask.tif files (kaggle_3m layout)"
        )
    return patients


def read_subsets(source: Path, patients: list[str]) -> dict[str, str]:
    """Each scored patient's subset (train / val / test / unseen) from `source`: a run directory
    (its split.json), a split.json, or a text file listing the held-out patients one per line
    (every other patient is then reported as train)."""
    path = source / SPLIT_FILE if source.is_dir() else source
    if not path.is_file():
        raise DataError(f"{path}: split not found (give a run directory, split.json or a list)")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            split = json.loads(text)
            valid = isinstance(split, dict) and all(
                isinstance(split.get(k, []), list) for k in ("train", "val", "test")
            )
        except ValueError:
            valid = False
        if not valid:
            raise DataError(f"{path}: not a split file (train/val/test lists of patients)")
        return {name: patient_subset(name, [split]) for name in patients}
    listed = {line.split("#")[0].strip() for line in text.splitlines()} - {""}
    unknown = sorted(listed - set(patients))
    if unknown:
        raise DataError(f"{path}: patient {unknown[0]} has no masks to score")
    return {name: "test" if name in listed else "train" for name in patients}


def _read_volume(slices: dict[int, Path], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A patient's masks stacked in slice order, all of `shape` (default: the first mask's)."""
    numbers = sorted(slices)
    if shape is None:
        shape = tifffile.imread(slices[numbers[0]]).shape[:2]
    return np.stack([read_mask(slices[n], shape) for n in numbers]).astype(bool)


def paired_volumes(pred_root: Path, truth_root: Path):
    """Yield (patient, prediction, truth) volumes; a missing patient or slice is a DataError."""
    predicted, truths = mask_files(pred_root), mask_files(truth_root)
    for name in sorted(set(truths) ^ set(predicted)):
        if name in truths:
            raise DataError(
                f"{pred_root / name}: no predicted masks for patient {name} "
                f"(it has truth masks in {truth_root})"
            )
        raise DataError(f"{pred_root / name}: patient {name} has no truth masks in {truth_root}")
    for name in sorted(truths):
        for number in sorted(set(truths[name]) ^ set(predicted[name])):
            missing_in = pred_root if number in truths[name] else truth_root
            present = {**predicted[name], **truths[name]}[number]
            raise DataError(f"{missing_in / name / present.name}: slice {number} is missing")
        truth = _read_volume(truths[name])
        pred = _read_volume(predicted[name], truth.shape[1:])
        yield name, pred, truth


def evaluate_folder(
    pred_root: str | Path,
    truth_root: str | Path,
    output_dir: str | Path,
    postprocessing: list[dict[str, Any]] | None = None,
    tolerance: float = NSD_TOLERANCE,
    overwrite: bool = False,
    split: str | Path | None = None,
) -> dict[str, Any]:
    """Write `dsc.csv`, `dsc_summary.json`, `dsc.png` and `evaluation.json` into output_dir, each
    patient's `subset` from `split` (without one: `unseen`), the held-out ones headlined."""
    pred_root = resolve_path(pred_root, "pred_dir")
    truth_root = resolve_path(truth_root, "truth_dir")
    out = resolve_path(output_dir, "--output")
    steps = check_steps(postprocessing, setting="--postprocessing")
    names = sorted(mask_files(truth_root))
    subsets = (
        dict.fromkeys(names, "unseen")  # no split known: every patient in the headline
        if split is None
        else read_subsets(resolve_path(split, "--split"), names)
    )
    rows, cases = [], []
    for name, pred, truth in paired_volumes(pred_root, truth_root):
        mask = apply(pred, steps)
        scores = score(mask, truth, None, tolerance)
        rows.append({PATIENT_COLUMN: name, SUBSET_COLUMN: subsets[name], **scores})
        try:  # the images, where the truth folder holds them, for the failure gallery
            image = read_patient(scan_patient(truth_root / name)).image
        except DataError:  # a folder of masks only
            continue
        if image.shape[:3] == truth.shape:
            cases.append(failure_case(name, image, truth, mask, rows[-1]["dsc"]))
    claim_output_dir(out, "--output", {"pred_dir": pred_root, "truth_dir": truth_root}, overwrite)
    summary = {
        "predictions": str(pred_root),
        "truth": str(truth_root),
        "postprocessing": steps,
        "patients": len(rows),
        "split": None if split is None else str(Path(split).resolve()),
        "scores": write_scores(rows, out, tolerance, cases=cases),
    }
    write_json(out / "evaluation.json", summary)
    return summary
