"""The run's final validation, scored the way predict.py scores: the reported checkpoint predicts
every slice of each validation patient, in the original geometry; the post-processing is decided
once on the saved masks (`postprocessing.json`), so the reported figures equal predict.py's. The
same pass calibrates the probabilities and draws the worst patients (`failures.png`)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import DataError
from brainseg.metrics.calibration import (
    calibrated,
    expected_calibration_error,
    fit_temperature,
    reliability,
    sample_pixels,
)
from brainseg.postprocessing import StepList, apply
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import (
    DECISION_FILE,
    VALIDATION_DIR,
    decide_run,
    save_prediction,
)
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import load_checkpoint
from brainseg.reporting.figures import (
    FAILURES_FILE,
    failure_case,
    failure_gallery,
    reliability_diagram,
)
from brainseg.runfiles import write_json

log = logging.getLogger("brainseg")
CALIBRATION_FILE = "calibration.json"


def final_validation(
    cfg: DictConfig, trainer: L.Trainer, checkpoint: str, candidates: Sequence[StepList]
) -> dict[str, Any] | None:
    """Rank 0, after fitting: predict, save, decide among `candidates`, show the gallery to the W&B
    and TensorBoard loggers; returns the steps, the decision file and the metrics per patient
    after the steps (None: no validation patients to score)."""
    data = trainer.datamodule.provenance()
    data_root, patients = data["data_root"], data["split"].get("val") or []
    if not (data_root and patients):
        return None
    run_dir = Path(cfg.paths.output_dir)
    batch_size = int(cfg.data.get("val_batch_size") or cfg.data.get("batch_size") or 16)
    member = load_checkpoint(checkpoint)
    predictor = Predictor([member], batch_size=batch_size, device=trainer.strategy.root_device)
    available = {p.name: p for p in find_patients(data_root)}
    missing = [name for name in patients if name not in available]
    if missing:
        raise DataError(f"{data_root}: validation patient {missing[0]} not found")
    shutil.rmtree(run_dir / VALIDATION_DIR, ignore_errors=True)  # an earlier attempt's
    pixels = {}
    for seed, name in enumerate(patients):
        volume = read_patient(available[name])
        probs = predictor.predict(volume)
        save_prediction(run_dir, name, probs > member.threshold, volume.mask)
        pixels[name] = sample_pixels(probs, volume.mask, seed)
    calibration = calibrate(run_dir, pixels)
    decision = decide_run(
        run_dir,
        list(candidates),
        float(cfg.metric.nsd_tolerance),
        {"calibration": {"temperature": calibration["temperature"], "ece": calibration["ece"]}},
    )
    decision_file = str(run_dir / DECISION_FILE)
    level = logging.WARNING if decision["erased"] else logging.INFO
    log.log(level, f"{describe(decision)}; recorded in {decision_file}")
    per_patient = {name: decision["metrics"][name] for name in patients}
    cases = []
    for name in patients:  # the masks predict.py would write: the saved ones after the steps
        volume = read_patient(available[name])
        with np.load(run_dir / VALIDATION_DIR / f"{name}.npz") as saved:
            mask = apply(saved["raw"], decision["postprocessing"])
        cases.append(failure_case(name, volume.image, volume.mask, mask, per_patient[name]["dsc"]))
    failures = failure_gallery(cases, run_dir / FAILURES_FILE)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image("val/failures", images=[str(failures)])
        elif isinstance(logger, TensorBoardLogger):
            image = iio.imread(failures)[..., :3]
            logger.experiment.add_image(
                "val/failures", image, trainer.global_step, dataformats="HWC"
            )
    return {
        "postprocessing": decision["postprocessing"],
        "decision": decision_file,
        "per_patient": per_patient,
    }


def calibrate(run_dir: Path, pixels: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Fit the temperature on the validation patients' sampled pixels; write the record (ECE
    before and after, pooled and per patient) to `calibration.json` and the reliability diagram
    to `calibration.png` (the checkpoints record the temperature with the post-processing)."""
    probs = np.concatenate([p for p, _ in pixels.values()])
    truth = np.concatenate([t for _, t in pixels.values()])
    temperature = fit_temperature(probs, truth)

    def ece(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
        return {
            "before": expected_calibration_error(p, t),
            "after": expected_calibration_error(calibrated(p, temperature), t),
        }

    record = {
        "temperature": temperature,
        "ece": ece(probs, truth),
        "ece_per_patient": {name: ece(p, t) for name, (p, t) in pixels.items()},
        "pixels": len(probs),
        "patients": list(pixels),
        "method": "temperature scaling of the lesion logit; pixels drawn uniformly per patient",
    }
    path = write_json(run_dir / CALIBRATION_FILE, record)
    reliability_diagram(
        reliability(probs, truth),
        reliability(calibrated(probs, temperature), truth),
        (record["ece"]["before"], record["ece"]["after"]),
        temperature,
        run_dir / "calibration.png",
    )
    log.info(
        f"calibration: temperature {temperature:.3f}, ECE {record['ece']['before']:.4f} -> "
        f"{record['ece']['after']:.4f} on {len(probs)} validation pixels; {path}"
    )
    return record
