"""Segmentation metrics: every per-volume metric with its name and direction (functional.py), the
DDP-exact Metric that returns them per patient from one pass (volume.py) and per-slice/pixel
torchmetrics (slice_metrics.py). A new per-volume metric goes into functional.py only."""

from brainseg.metrics.functional import COUNTS, METRICS, NSD_TOLERANCE, dice_score, volume_metrics
from brainseg.metrics.slice_metrics import slice_metrics
from brainseg.metrics.volume import VolumeMetrics

__all__ = [
    "COUNTS",
    "METRICS",
    "NSD_TOLERANCE",
    "VolumeMetrics",
    "dice_score",
    "slice_metrics",
    "volume_metrics",
]
