"""Per-volume segmentation metrics on boolean (slices, rows, columns) arrays, in pixels (the data
carries no spacing); the empty-volume conventions (docs/metrics.md) score "one empty" as the worst
value, so that predicting nothing never raises a mean. Surface distances are MONAI's."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage

NSD_TOLERANCE = 2.0  # pixels; the boundary deviation that normalised surface Dice accepts
# Every per-volume metric, in table order, and whether higher is better: every table takes its
# columns from METRICS.
HIGHER_IS_BETTER = {
    "dsc": True,
    "hd95": False,
    "assd": False,
    "nsd": True,
    "volume_difference": False,
    "lesion_recall": True,
    "lesion_precision": True,
}
METRICS = tuple(HIGHER_IS_BETTER)
# The lesion counts behind lesion_recall and lesion_precision, also columns of the tables.
COUNTS = ("lesions_true", "lesions_predicted", "lesions_found", "lesions_hit")


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean arrays with the empty-set convention above."""
    pred, target = pred.astype(bool), target.astype(bool)
    denominator = int(pred.sum()) + int(target.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, target).sum()) / denominator


def surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary voxel of `pred` to the boundary of `truth`, and back, both
    non-empty; cut to their joint box first, so that MONAI does not scan the whole volume."""
    box = ndimage.find_objects((pred | truth).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    pad = [(1, 1)] * pred.ndim
    y_pred, y = (torch.from_numpy(np.pad(m[box], pad)) for m in (pred, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices inside its own helpers
        _, (pred_to_truth, truth_to_pred), _ = get_edge_surface_distance(y_pred, y, symmetric=True)
    return np.asarray(pred_to_truth, dtype=np.float64), np.asarray(truth_to_pred, dtype=np.float64)


def _surface(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """HD95, ASSD and NSD as MONAI defines them, from one pair of distance sets."""
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if has_pred != has_truth:
        worst = math.dist(truth.shape, (1,) * truth.ndim)  # the grid's diagonal
        return {"hd95": worst, "assd": worst, "nsd": 0.0}
    forward, backward = surface_distances(pred, truth)
    both = np.concatenate([forward, backward])
    return {
        "hd95": float(max(np.quantile(forward, 0.95), np.quantile(backward, 0.95))),
        "assd": float(both.mean()),
        "nsd": float(np.count_nonzero(both <= tolerance) / len(both)),
    }


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Face-connected components: a truth one is found, a predicted one hits, when it shares a voxel
    with the other mask."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    truth_labels, n_truth = ndimage.label(truth)
    pred_labels, n_pred = ndimage.label(pred)
    found = len(np.unique(truth_labels[truth & pred]))
    hit = len(np.unique(pred_labels[truth & pred]))
    if n_truth == 0 and n_pred == 0:
        recall = precision = 1.0
    else:
        recall = found / n_truth if n_truth else 0.0
        precision = hit / n_pred if n_pred else 0.0
    return {
        "lesions_true": n_truth,
        "lesions_predicted": n_pred,
        "lesions_found": found,
        "lesions_hit": hit,
        "lesion_recall": recall,
        "lesion_precision": precision,
    }


def volume_metrics(
    pred: np.ndarray, truth: np.ndarray, tolerance: float = NSD_TOLERANCE
) -> dict[str, float]:
    """Every metric of this module for one volume (the columns of the per-patient tables)."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    return {
        "dsc": dice_score(pred, truth),
        **_surface(pred, truth, tolerance),
        "volume_difference": abs(int(np.count_nonzero(pred)) - int(np.count_nonzero(truth))),
        **lesion_detection(pred, truth),
    }
