"""What the experiment trackers (W&B, TensorBoard) show beyond the logged scalars, read from the
run report so that they agree with it: the best `monitor` value, the per-patient table and
overlays."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from brainseg.reporting.figures import overlay, window
from brainseg.tracking import best_on_val, log_improvement
from brainseg.training.report import RunReport


class TrackerMedia(L.Callback):
    """For the W&B and TensorBoard loggers of a run (rank 0), listed after its RunReport: the best
    `monitor` value so far and, when it improves, the per-patient Dice table and the largest-lesion
    slice of `patients` validation patients with prediction and truth (docs/tracking.md)."""

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
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(best_on_val(monitor, best))
                log_improvement(logger, scores, examples, step)
            elif isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"hp_metric": best.value(monitor)}, step=step)
                if examples:
                    pictures = np.stack(
                        [overlay(e["image"], e["pred"], e["truth"]) for e in examples]
                    )
                    logger.experiment.add_images(
                        "val/overlays", pictures, global_step=step, dataformats="NHWC"
                    )
