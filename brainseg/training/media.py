"""What the experiment trackers (W&B, TensorBoard) show beyond the logged scalars, so that they
agree with the run report: the best `monitor` value, the per-patient table and overlays."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from brainseg.metrics.monitor import higher_is_better, improves
from brainseg.reporting.figures import overlay
from brainseg.runfiles import epoch_shift, numbered_from_one
from brainseg.tracking import log_best_so_far, log_improvement


def _display(image: np.ndarray) -> np.ndarray:
    """A z-scored (3, H, W) slice as (H, W, 3) uint8 for pictures."""
    low, high = np.percentile(image, [1, 99])
    return (
        (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255)
        .astype(np.uint8)
        .transpose(1, 2, 0)
    )


class TrackerMedia(L.Callback):
    """For the W&B and TensorBoard loggers of a run (rank 0):

    - the best `monitor` value so far in its direction (highest Dice, lowest HD95) and its epoch:
      in W&B's summary labelled `best_on_val/...` (brainseg.tracking), TensorBoard's `hp_metric`;
    - when the best improves: the per-patient Dice table, and the slice with the largest lesion of
      each of `patients` validation patients (the largest lesions first) with prediction and truth
      (W&B: toggleable masks; TensorBoard: red/green outlines).
    """

    def __init__(self, monitor: str, patients: int = 4) -> None:
        self.monitor = monitor
        self.higher = higher_is_better(monitor)
        self.patients = patients
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._slices: dict[int, dict[str, Any]] = {}  # patient index -> its largest-lesion slice

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._slices = {}

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            trainer.sanity_checking
            or not isinstance(outputs, torch.Tensor)
            or not trainer.is_global_zero
        ):
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

    def _examples(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        datamodule = getattr(trainer, "datamodule", None)
        names = datamodule.patient_names("val") if datamodule is not None else None
        chosen = sorted(self._slices.items(), key=lambda item: -item[1]["area"])[: self.patients]
        return [
            {**example, "caption": f"{names[p] if names else p} slice {example['slice']}"}
            for p, example in chosen
        ]

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module logged the epoch's metrics (on_validation_epoch_end is too early).
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or math.isnan(float(value)):
            return
        improved = improves(float(value), self.best, self.higher)
        if improved:
            self.best, self.best_epoch = float(value), trainer.current_epoch + 1
        examples = self._examples(trainer) if improved else []
        scores = pl_module.volume_scores.get("val", {}) if improved else {}
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_best_so_far(logger, self.monitor, self.best, self.best_epoch)
                log_improvement(
                    logger, scores, [{**e, "image": _display(e["image"])} for e in examples], step
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"hp_metric": self.best}, step=step)
                if examples:
                    pictures = np.stack(
                        [overlay(_display(e["image"]), e["pred"], e["truth"]) for e in examples]
                    )
                    logger.experiment.add_images(
                        "val/overlays", pictures, global_step=step, dataformats="NHWC"
                    )

    def state_dict(self) -> dict[str, Any]:
        return numbered_from_one({"best": self.best, "best_epoch": self.best_epoch})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")
        if self.best_epoch is not None:
            self.best_epoch += epoch_shift(state_dict)  # 1 for runs that counted from 0
