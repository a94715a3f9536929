"""The run's final validation, scored the way predict.py scores: the checkpoint the selection rule
reports predicts every slice of each validation patient (brainseg.prediction), restored to the
original geometry. The thresholded masks are saved in the run directory and the post-processing is
decided once on them, into `<run>/postprocessing.json` (brainseg.postprocessing), which scores each
candidate: the run's reported figures are those of the chosen steps, equal to predict.py's on the
same patients."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import DataError
from brainseg.postprocessing import StepList
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import (
    DECISION_FILE,
    VALIDATION_DIR,
    decide_runs,
    save_prediction,
)
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import load_checkpoint

log = logging.getLogger("brainseg")


def final_validation(
    run_dir: Path,
    checkpoint: Path,
    data_root: str | Path,
    patients: Sequence[str],
    candidates: Sequence[StepList],
    fallback: StepList,
    nsd_tolerance: float,
    device: Any = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Predict, save, decide among `candidates` (none: the training `fallback` steps are the one
    candidate); returns the steps, the decision file and the metrics per patient after the steps."""
    member = load_checkpoint(checkpoint)
    predictor = Predictor([member], batch_size=batch_size, device=device)
    available = {p.name: p for p in find_patients(data_root)}
    missing = [name for name in patients if name not in available]
    if missing:
        raise DataError(f"{data_root}: validation patient {missing[0]} not found")
    shutil.rmtree(Path(run_dir) / VALIDATION_DIR, ignore_errors=True)  # an earlier attempt's
    for name in patients:
        volume = read_patient(available[name])
        save_prediction(run_dir, name, predictor.predict(volume) > member.threshold, volume.mask)
    decision = decide_runs(run_dir, [run_dir], list(candidates) or [fallback], nsd_tolerance)
    decision_file = str(Path(run_dir) / DECISION_FILE)
    log.log(
        logging.WARNING if decision["erased"] else logging.INFO,
        "%s; recorded in %s",
        describe(decision),
        decision_file,
    )
    return {
        "postprocessing": decision["postprocessing"],
        "decision": decision_file,
        "per_patient": {name: decision["metrics"][name] for name in patients},
    }
