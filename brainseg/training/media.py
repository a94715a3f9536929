"""What the loggers show beyond the scalars the module logs, read from the run report so that they
agree with it: the best `monitor` value so far, the per-patient table and overlays, and at the end
the reported epoch's figures with the run's headline."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from brainseg.reporting.figures import overlay, window
from brainseg.runfiles import RunMetrics
from brainseg.tracking import log_improvement
from brainseg.training.report import RunReport


class TrackerMedia(L.Callback):
    """For the W&B and TensorBoard loggers of a run (rank 0), listed after its RunReport: the best
    `monitor` value so far (`best_on_val/<name>`, `best_on_val/epoch`) and, when it improves, the
    per-patient Dice table and the largest-lesion slice of `patients` validation patients with
    prediction and truth (docs/tracking.md)."""

    def __init__(self, report: RunReport, patients: int = 4) -> None:
        self.report = report
        self.patients = patients
        self._slices: dict[int, dict[str, Any]] = {}  # patient index -> its largest-lesion slice

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._slices = {}

    @rank_zero_only
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: dict[str, Any], *args: Any
    ) -> None:
        if trainer.sanity_checking or not isinstance(outputs, torch.Tensor):
            return
        areas = batch["mask"].flatten(1).sum(1).cpu()
        patients = batch["patient"].cpu()
        for patient in patients.unique().tolist():
            rows = (patients == patient).nonzero().flatten()
            row = int(rows[areas[rows].argmax()])
            if float(areas[row]) > self._slices.get(patient, {}).get("area", -1.0):
                self._slices[patient] = {
                    "area": float(areas[row]),
                    "slice": int(batch["slice"][row]),
                    "image": batch["image"][row].detach().float().cpu().numpy(),
                    "truth": batch["mask"][row, 0].detach().cpu().numpy() > 0.5,
                    "pred": outputs[row, 0].detach().cpu().numpy()
                    > pl_module.volume_metrics["val"].threshold,
                }

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the run report took the epoch's metrics (on_validation_epoch_end is too early).
        best, monitor = self.report.best, self.report.monitor
        if trainer.sanity_checking or best is None:
            return
        improved = best.epoch == trainer.current_epoch + 1
        datamodule = getattr(trainer, "datamodule", None)
        names = datamodule.patient_names("val") if datamodule is not None else None
        chosen = sorted(self._slices.items(), key=lambda item: -item[1]["area"])[: self.patients]
        examples = [  # z-scored (3, H, W) slices windowed over their tissue, as (H, W, 3) uint8
            {
                **example,
                "image": window(example["image"] - example["image"].min()).transpose(1, 2, 0),
                "caption": f"{names[p] if names else p} slice {example['slice']}",
            }
            for p, example in (chosen if improved else [])
        ]
        scores = best.per_patient if improved else {}
        step, name = trainer.global_step, monitor.removeprefix("val/")
        best_on_val = {f"best_on_val/{name}": best.value(monitor), "best_on_val/epoch": best.epoch}
        for logger in trainer.loggers:
            logger.log_metrics(best_on_val, step=step)
            if isinstance(logger, WandbLogger):
                log_improvement(logger, scores, examples, step)
            elif isinstance(logger, TensorBoardLogger) and examples:
                pictures = np.stack([overlay(e["image"], e["pred"], e["truth"]) for e in examples])
                logger.experiment.add_images(
                    "val/overlays", pictures, global_step=step, dataformats="NHWC"
                )


def log_reported(loggers: list[Logger], metrics: RunMetrics, step: int) -> None:
    """Every logger's last point: the reported epoch's figures as `reported/<name>`
    (`reported/dsc_volume`, ..., `reported/epoch`), so that W&B's summary is its chart's last
    point; TensorBoard's `hp_metric`, which its HPARAMS view compares runs on, is the headline."""
    if metrics.headline is None:
        return
    scores = metrics.selected.scores
    values = {f"reported/{k.removeprefix('val/')}": v for k, v in scores.values.items()}
    values["reported/epoch"] = scores.epoch
    for logger in loggers:
        hp_metric = {"hp_metric": metrics.headline} if isinstance(logger, TensorBoardLogger) else {}
        logger.log_metrics({**values, **hp_metric}, step=step)
