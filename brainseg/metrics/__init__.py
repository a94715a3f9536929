"""Segmentation metrics: per-volume Dice (the headline number, volume_dice.py) and per-slice/pixel
torchmetrics (slice_metrics.py)."""

from brainseg.metrics.slice_metrics import slice_metrics
from brainseg.metrics.volume_dice import VolumeDice, dice_score

__all__ = ["VolumeDice", "dice_score", "slice_metrics"]
