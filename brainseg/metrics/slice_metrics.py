"""Per-slice and pixel-pooled torchmetrics, logged next to the per-volume Dice."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)


def slice_metrics(threshold: float = 0.5) -> MetricCollection:
    """Mean Dice over slices (an empty slice predicted empty scores 1) and pixel-pooled IoU,
    precision and recall over all evaluated slices."""
    return MetricCollection(
        {
            "dsc_slice": BinaryF1Score(
                threshold=threshold, multidim_average="samplewise", zero_division=1
            ),
            "iou_pixel": BinaryJaccardIndex(threshold=threshold),
            "precision_pixel": BinaryPrecision(threshold=threshold),
            "recall_pixel": BinaryRecall(threshold=threshold),
        },
        compute_groups=False,
    )
