"""What the experiment trackers (W&B, TensorBoard) show beyond the logged scalars, so that they
agree with the run report: the best per-volume Dice, the per-patient table and overlays."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from brainseg.reporting.figures import overlay

LESION = {1: "lesion"}


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

    - the best `monitor` value so far (val/dsc_volume), not the last epoch's: W&B's run summary
      (with its epoch, as `<monitor>_best_epoch`), TensorBoard's `hp_metric`; so runs tables,
      sorting and parallel coordinates agree with metrics.json and the sweep report;
    - when the best improves: the per-patient Dice table, and the slice with the largest lesion of
      each of `patients` validation patients (the largest lesions first) with prediction and truth
      (W&B: toggleable masks; TensorBoard: red/green outlines).
    """

    def __init__(self, monitor: str, patients: int = 4) -> None:
        self.monitor = monitor
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
        mean = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or mean is None or math.isnan(float(mean)):
            return
        improved = self.best is None or float(mean) > self.best
        if improved:
            self.best, self.best_epoch = float(mean), trainer.current_epoch
        examples = self._examples(trainer) if improved else []
        scores = pl_module.volume_scores.get("val", {})
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._to_wandb(logger, improved, scores, examples, step)
            elif isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"hp_metric": self.best}, step=step)
                if examples:
                    pictures = np.stack(
                        [overlay(_display(e["image"]), e["pred"], e["truth"]) for e in examples]
                    )
                    logger.experiment.add_images(
                        "val/overlays", pictures, global_step=step, dataformats="NHWC"
                    )

    def _to_wandb(
        self,
        logger: WandbLogger,
        improved: bool,
        scores: dict[str, float],
        examples: list[dict[str, Any]],
        step: int,
    ) -> None:
        # Set after Lightning logged this epoch's value, which W&B would otherwise keep as the
        # summary.
        logger.experiment.summary.update(
            {self.monitor: self.best, f"{self.monitor}_best_epoch": self.best_epoch}
        )
        if improved and scores:
            logger.log_table(
                "val/dsc_volume_per_patient",
                columns=["patient", "dsc_volume"],
                data=[[name, value] for name, value in scores.items()],
                step=step,
            )
        if examples:
            masks = [
                {
                    "prediction": {"mask_data": e["pred"].astype(np.uint8), "class_labels": LESION},
                    "truth": {"mask_data": e["truth"].astype(np.uint8), "class_labels": LESION},
                }
                for e in examples
            ]
            logger.log_image(
                "val/overlays",
                images=[_display(e["image"]) for e in examples],
                step=step,
                masks=masks,
                caption=[e["caption"] for e in examples],
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")
