"""The files a post-processing decision is made from and recorded in: `<run>/validation/*.npz`
(a run's final validation, thresholded, and the truth) and `<run>/postprocessing.json` (also
recorded in the run's checkpoints); a k-fold configuration's one decision (`pooled_decision`)."""

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
from brainseg.runfiles import write_json

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
    """A run's saved validation predictions (patient, raw, truth), patients in name order, one at
    a time, each name after `prefix` (a sweep's `<job>/`); a one-line DataError names a bad file."""
    for path in sorted((Path(run_dir) / VALIDATION_DIR).glob("*.npz")):
        try:
            with np.load(path) as data:
                raw, truth = data["raw"].astype(bool), data["truth"].astype(bool)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a saved validation prediction ({exc})") from None
        if raw.shape != truth.shape:
            raise DataError(f"{path}: prediction {raw.shape} and truth {truth.shape} differ")
        yield prefix + path.stem, raw, truth


def _recorded_candidates(where: Path, runs: Sequence[Path]) -> list[StepList]:
    """The candidates the runs' own decisions were made among, checked (they must agree); a
    DataError naming a file that is not such a decision."""
    found = set()
    for path in (Path(run) / DECISION_FILE for run in runs):
        try:
            if path.is_file():
                record = json.loads(path.read_text())["candidates"]
                checked = [check_steps(c["postprocessing"], f"{path}: candidates") for c in record]
                found.add(json.dumps(checked))
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise DataError(f"{path}: not a post-processing decision ({exc})") from None
    if len(found) != 1:
        reason = "its runs were decided among different candidates" if found else "no decision"
        raise ConfigError(
            f"{where}: {reason} to take the candidates from; give --candidates, or decide "
            "each run again among the same ones"
        )
    return json.loads(found.pop())


def decide_run(
    run_dir: Path,
    candidates: Any = None,
    tolerance: float = NSD_TOLERANCE,
    also: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decide once on a run's saved validation predictions, write `<run>/postprocessing.json` and
    record the decision in the run's checkpoints, with the other decisions of its final validation
    (`also`) in the same rewrite. `candidates` default to those the run was decided among."""
    run_dir = Path(run_dir)
    if not any((run_dir / VALIDATION_DIR).glob("*.npz")):
        raise DataError(f"{run_dir}: no saved validation predictions ({VALIDATION_DIR}/*.npz)")
    if candidates is None:
        candidates = _recorded_candidates(run_dir, [run_dir])
    if not (isinstance(candidates, list | tuple) and candidates):
        raise ConfigError("candidates: give a list of step lists, e.g. [[], [largest_component]]")
    checked = [check_steps(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    decision = decide(run_predictions(run_dir), checked, tolerance)
    decision["folder"] = str(run_dir.resolve())
    path = run_dir / DECISION_FILE
    write_json(path, decision)
    # what a checkpoint keeps: the steps, where and on how many patients they were chosen, and
    # the patients whose lesion they erased
    kept = {"steps": decision["postprocessing"], "decision": str(path.resolve())}
    kept.update(patients=len(decision["patients"]), erased=decision["erased"])
    kept["rule"] = decision["rule"]
    for checkpoint in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        if checkpoint.is_file():
            record_decisions(checkpoint, {"postprocessing": kept, **(also or {})})
    return decision


def pooled_decision(folds: Sequence[Path]) -> dict[str, Any] | None:
    """The one decision of a k-fold configuration, on its folds' saved validation predictions
    pooled (`<job>/<patient>`), among the candidates the folds were decided among. Never stored,
    so the sweep report and predict.py `sweep_dir=` apply the same steps. None for a single run or
    a fold without saved predictions: each run's own decision stands."""
    if len(folds) < 2 or not all((Path(f) / VALIDATION_DIR).is_dir() for f in folds):
        return None
    candidates = _recorded_candidates(Path(folds[0]).parent, folds)
    return decide((p for f in folds for p in run_predictions(f, f"{Path(f).name}/")), candidates)


def steps_to_apply(
    setting: Any, recorded: Sequence[tuple[Path, Mapping[str, Any]]], folds: Sequence[Path] = ()
) -> dict[str, Any]:
    """{"postprocessing": steps, "source": where they come from} for predict.py: the `setting`
    when given; else the pooled decision of a k-fold configuration's `folds`; else the one
    decision every model records."""
    if setting is not None:
        return {"postprocessing": check_steps(setting, SETTING), "source": "config"}
    pooled = pooled_decision(folds)
    if pooled is not None:
        source = f"decided on the {len(pooled['patients'])} patients of {len(folds)} folds pooled"
        return {"postprocessing": pooled["postprocessing"], "source": source}
    (first, record), *others = recorded
    for path, other in others:
        if other["steps"] != record["steps"]:
            raise ConfigError(
                f"{first} and {path} record different post-processing "
                f"({record['steps']} vs {other['steps']}); set {SETTING}"
            )
    steps = check_steps(record["steps"], f"{first}: {SETTING}", DataError)
    return {"postprocessing": steps, "source": record["source"]}
