"""The files a post-processing decision is made from and recorded in: `<run>/validation/*.npz`
(a run's final validation, thresholded, and the truth), `<run>/postprocessing.json` (also recorded
in the run's checkpoints) and `<sweep>/postprocessing.json` (the folds pooled)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.checkpoint import record_decisions
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import NSD_TOLERANCE
from brainseg.postprocessing import StepList, check_steps
from brainseg.postprocessing.decision import Prediction, decide

VALIDATION_DIR = "validation"
DECISION_FILE = "postprocessing.json"
SETTING = "postprocessing"  # predict.py's setting that overrides every recorded decision


def save_prediction(run_dir: Path, name: str, raw: np.ndarray, truth: np.ndarray) -> Path:
    """Write one patient's thresholded prediction and truth under `<run_dir>/validation/`."""
    path = Path(run_dir) / VALIDATION_DIR / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, raw=np.asarray(raw, bool), truth=np.asarray(truth, bool))
    return path


def run_predictions(run_dir: Path, prefix: str = "") -> Iterator[Prediction]:
    """A run's saved validation predictions (patient, raw, truth), one at a time, in name order."""
    for path in sorted((Path(run_dir) / VALIDATION_DIR).glob("*.npz")):
        try:
            with np.load(path) as data:
                raw, truth = data["raw"].astype(bool), data["truth"].astype(bool)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a saved validation prediction ({exc})") from None
        if raw.shape != truth.shape:
            raise DataError(f"{path}: prediction {raw.shape} and truth {truth.shape} differ")
        yield prefix + path.stem, raw, truth


def read_decision(path: Path) -> dict[str, Any]:
    """A recorded decision, its chosen steps re-checked by name; a DataError naming the file."""
    try:
        decision = json.loads(Path(path).read_text())
        steps = decision["postprocessing"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a post-processing decision ({exc})") from None
    decision["postprocessing"] = check_steps(steps, f"{path}: postprocessing", DataError)
    return decision


def _recorded_candidates(folder: Path, runs: Sequence[Path]) -> list[StepList]:
    """The candidates the runs' own decisions were made among (they must agree)."""
    found = {
        json.dumps([c["postprocessing"] for c in read_decision(path)["candidates"]])
        for path in (Path(run) / DECISION_FILE for run in runs)
        if path.is_file()
    }
    if len(found) != 1:
        reason = "its runs were decided among different candidates" if found else "no decision"
        raise ConfigError(f"{folder}: {reason} to take the candidates from; give --candidates")
    return json.loads(found.pop())


def decide_runs(
    folder: Path,
    runs: Sequence[Path],
    candidates: Any = None,
    tolerance: float = NSD_TOLERANCE,
    also: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decide once on the saved validation predictions of `runs` (one run, or the folds of one
    configuration pooled) and write `<folder>/postprocessing.json`; a run's checkpoints record it
    with its final validation's other decisions (`also`) in one rewrite."""
    folder = Path(folder)
    if not any(any((Path(run) / VALIDATION_DIR).glob("*.npz")) for run in runs):
        raise DataError(
            f"{folder}: no saved validation predictions ({VALIDATION_DIR}/*.npz in the run "
            "directory or in the job folders of a sweep)"
        )
    if candidates is None:
        candidates = _recorded_candidates(folder, runs)
    if not (isinstance(candidates, list | tuple) and candidates):
        raise ConfigError("candidates: give a list of step lists, e.g. [[], [largest_component]]")
    checked = [check_steps(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    pooled = [Path(run) for run in runs] != [folder]
    predictions = (
        prediction
        for run in runs
        for prediction in run_predictions(run, f"{Path(run).name}/" if pooled else "")
    )
    decision = {
        **decide(predictions, checked, tolerance),
        "scope": "sweep" if pooled else "run",
        "folder": str(folder.resolve()),
        **({"jobs": [Path(run).name for run in runs]} if pooled else {}),
    }
    path = folder / DECISION_FILE
    path.write_text(json.dumps(decision, indent=2))
    kept = {  # what a checkpoint keeps of the decision
        "steps": decision["postprocessing"],
        "decision": str(path.resolve()),
        "patients": len(decision["patients"]),
        "erased": decision["erased"],
        "rule": decision["rule"],
    }
    for checkpoint in [] if pooled else sorted((folder / "checkpoints").glob("*.ckpt")):
        if checkpoint.is_file():
            record_decisions(checkpoint, {"postprocessing": kept, **(also or {})})
    return decision


def steps_to_apply(
    setting: Any, recorded: Sequence[tuple[Path, Mapping[str, Any]]], sweep_dir: Path | None = None
) -> dict[str, Any]:
    """{"postprocessing": steps, "source": where they come from} for predict.py: the `setting`
    when given; else a sweep's own decision; else the one decision every model records."""
    if setting is not None:
        return {"postprocessing": check_steps(setting, SETTING), "source": "config"}
    if sweep_dir is not None and (sweep_dir / DECISION_FILE).is_file():
        path = sweep_dir / DECISION_FILE
        return {"postprocessing": read_decision(path)["postprocessing"], "source": str(path)}
    (first, record), *others = recorded
    for path, other in others:
        if other["steps"] != record["steps"]:
            pooled = f", or decide once: python -m brainseg.postprocessing decide {sweep_dir}"
            raise ConfigError(
                f"{first} and {path} record different post-processing "
                f"({record['steps']} vs {other['steps']}); set {SETTING}"
                + (pooled if sweep_dir else "")
            )
    steps = check_steps(record["steps"], f"{first}: {SETTING}", DataError)
    return {"postprocessing": steps, "source": record["source"]}
