"""The files a post-processing decision is made from and recorded in.

- `<run>/validation/<patient>.npz`: what a training run's final validation predicted for each of
  its validation patients, as predict.py would (every slice, original geometry), thresholded but
  not post-processed (`raw`), and the truth (`truth`); compressed booleans.
- `<run or sweep>/postprocessing.json`: the decision (brainseg.postprocessing.decision) and
  where it was made; for a sweep, made once on the pooled predictions of all its jobs.
- the provenance of a run's checkpoints (brainseg.checkpoint), which predict.py reads.

`decide_folder` re-decides from the saved predictions alone: no model, no data.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.checkpoint import record_postprocessing
from brainseg.errors import ConfigError, DataError
from brainseg.postprocessing import StepList, check_steps
from brainseg.postprocessing.decision import Prediction, decide

VALIDATION_DIR = "validation"
DECISION_FILE = "postprocessing.json"


def prediction_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / VALIDATION_DIR / f"{name}.npz"


def save_prediction(run_dir: Path, name: str, raw: np.ndarray, truth: np.ndarray) -> Path:
    """Write one patient's thresholded prediction and truth under `<run_dir>/validation/`."""
    path = prediction_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, raw=np.asarray(raw, bool), truth=np.asarray(truth, bool))
    return path


def read_prediction(path: Path) -> Prediction:
    """(patient, raw, truth) from a saved file; a one-line DataError naming it otherwise."""
    try:
        with np.load(path) as data:
            raw, truth = data["raw"].astype(bool), data["truth"].astype(bool)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a saved validation prediction ({exc})") from None
    if raw.shape != truth.shape:
        raise DataError(f"{path}: prediction {raw.shape} and truth {truth.shape} differ in shape")
    return path.stem, raw, truth


def run_predictions(run_dir: Path, prefix: str = "") -> Iterator[Prediction]:
    """A run's saved validation predictions, patients in name order, one at a time; `prefix` is
    put before each patient name (a sweep's `<job>/`)."""
    for path in sorted((Path(run_dir) / VALIDATION_DIR).glob("*.npz")):
        name, raw, truth = read_prediction(path)
        yield prefix + name, raw, truth


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep that saved validation predictions, in job order."""
    jobs = [p for p in Path(sweep_dir).iterdir() if (p / VALIDATION_DIR).is_dir()]
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def read_decision(path: Path) -> dict[str, Any]:
    """A recorded decision, its chosen steps re-checked by name; a DataError naming the file."""
    try:
        decision = json.loads(Path(path).read_text())
        decision["postprocessing"] = check_steps(
            decision["postprocessing"], f"{path}: postprocessing"
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a post-processing decision ({exc})") from None
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return decision


def _recorded_candidates(runs: Sequence[Path]) -> list[StepList]:
    """The candidates the runs' own decisions were made among (they must agree)."""
    found: dict[str, list[StepList]] = {}
    for run in runs:
        path = run / DECISION_FILE
        if path.is_file():
            found[str(path)] = [c["postprocessing"] for c in read_decision(path)["candidates"]]
    if not found:
        raise ConfigError(
            f"{runs[0] if len(runs) == 1 else runs[0].parent}: no recorded {DECISION_FILE} "
            "to take the candidates from; give them with --candidates"
        )
    (first, candidates), *others = found.items()
    for path, other in others:
        if other != candidates:
            raise ConfigError(
                f"{path} and {first} were decided among different candidates; "
                "give the candidates with --candidates"
            )
    return candidates


def decide_folder(folder: Path, candidates: Sequence[Any] | None = None) -> dict[str, Any]:
    """Decide for a run directory (its own validation patients; the decision also goes into its
    checkpoints) or a sweep directory (all jobs' validation patients pooled, each named
    `<job>/<patient>`), write `<folder>/postprocessing.json` and return the decision.

    `candidates` default to those the run (or every job of the sweep) was decided among."""
    folder = Path(folder)
    sweep = not (folder / VALIDATION_DIR).is_dir()
    runs = sweep_jobs(folder) if sweep and folder.is_dir() else [folder]
    if not any(any((run / VALIDATION_DIR).glob("*.npz")) for run in runs):
        raise DataError(
            f"{folder}: no saved validation predictions ({VALIDATION_DIR}/*.npz in the run "
            "directory or in the job folders of a sweep)"
        )
    if candidates is None:
        candidates = _recorded_candidates(runs)
    checked = [check_steps(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    if not checked:
        raise ConfigError("candidates: give at least one step list, e.g. [[]]")
    predictions = (
        prediction
        for run in runs
        for prediction in run_predictions(run, f"{run.name}/" if sweep else "")
    )
    decision = {
        **decide(predictions, checked),
        "scope": "sweep" if sweep else "run",
        "folder": str(folder.resolve()),
        **({"jobs": [run.name for run in runs]} if sweep else {}),
    }
    path = folder / DECISION_FILE
    path.write_text(json.dumps(decision, indent=2))
    if not sweep:
        for checkpoint in sorted((folder / "checkpoints").glob("*.ckpt")):
            record_postprocessing(checkpoint, provenance_record(decision, path))
    return decision


def provenance_record(decision: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a checkpoint keeps of the decision: the steps, where and on how many patients they
    were chosen, and the patients whose lesion they erased."""
    return {
        "steps": decision["postprocessing"],
        "decision": str(Path(path).resolve()),
        "patients": len(decision["patients"]),
        "erased": decision["erased"],
        "rule": decision["rule"],
    }
