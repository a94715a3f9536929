"""Per-patient Dice tables and overlay pictures for the experiment trackers that show them (W&B)."""

from __future__ import annotations

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from brainseg.reporting.figures import overlay


def _display(image: np.ndarray) -> np.ndarray:
    """A z-scored (3, H, W) slice as (H, W, 3) uint8 for pictures."""
    low, high = np.percentile(image, [1, 99])
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


class WandbMedia(L.Callback):
    """After each validation: the per-patient Dice table and a few FLAIR overlays
    (prediction red, truth green). Only rank 0 logs."""

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        scores = pl_module.volume_scores.get("val", {})
        examples = pl_module.val_examples
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            if scores:
                logger.log_table("val/dsc_volume_per_patient", columns=["patient", "dsc_volume"],
                                 data=[[name, value] for name, value in scores.items()], step=step)
            if examples:
                pictures = [overlay(_display(i.numpy()), p.numpy(), m.numpy())
                            for i, m, p in zip(examples["image"], examples["mask"], examples["pred"])]
                logger.log_image("val/overlays", images=pictures, step=step,
                                 caption=["red: prediction, green: truth"] * len(pictures))
