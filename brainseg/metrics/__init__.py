"""Segmentation metrics: every per-volume metric with its name and direction (functional.py), the
DDP-exact Metric that returns them per patient from one pass (volume_dice.py) and per-slice/pixel
torchmetrics (slice_metrics.py)."""

from brainseg.metrics.functional import (
    HIGHER_IS_BETTER,
    METRICS,
    NSD_TOLERANCE,
    dice_score,
    volume_metrics,
)
from brainseg.metrics.slice_metrics import slice_metrics
from brainseg.metrics.volume_dice import VolumeDice

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "NSD_TOLERANCE",
    "VolumeDice",
    "dice_score",
    "slice_metrics",
    "volume_metrics",
]
