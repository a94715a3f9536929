"""Per-volume segmentation metrics on boolean (slices, rows, columns) arrays.

Units: the LGG data carries no voxel spacing, so distances are in **pixels** with slices as the
first axis and a spacing of 1 on every axis. On masks in the original geometry (predict.py,
`python -m brainseg.evaluate`) a pixel is one pixel of the original 256x256 grid; during training
volumes are in the preprocessed grid (cropped, resized to `data.preprocess.image_size`).

Empty volumes (no lesion voxel), consistent with Dice (both empty: perfect; one empty: worst):

| metric | both empty | exactly one empty |
|---|---|---|
| `dsc` | 1 | 0 |
| `hd95`, `assd` | 0 | the diagonal of the volume's grid (the largest distance it can hold) |
| `nsd` (normalised surface Dice at `tolerance` pixels) | 1 | 0 |
| `volume_difference` (abs. difference of voxel counts) | 0 | the other mask's voxel count |
| `lesion_recall` (truth components touched by the prediction) | 1 | 0 |
| `lesion_precision` (predicted components touching the truth) | 1 | 0 |

Surface distances are MONAI's (boundary voxels and Euclidean distances from
`monai.metrics.utils.get_edge_surface_distance`, computed once per volume for the three metrics,
which match `compute_hausdorff_distance`, `compute_average_surface_distance` and
`compute_surface_dice`); components are face-connected (scipy.ndimage.label's default,
as for the largest-component step).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage

NSD_TOLERANCE = 2.0  # pixels; the boundary deviation that normalised surface Dice accepts
# Every per-volume metric, in table order, and whether higher is better. A new metric: a function
# here, an entry below and a key in volume_metrics; the module, run report, score tables and sweep
# report take their columns from METRICS.
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


def _grid_diagonal(shape: tuple[int, ...]) -> float:
    return float(math.sqrt(sum((n - 1) ** 2 for n in shape)))


def surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances from each boundary voxel of `pred` to the boundary of `truth`, and back
    (MONAI's get_edge_surface_distance), both masks non-empty.

    The masks are first cut to their joint bounding box plus one background voxel: the distances
    are the same, and MONAI no longer scans the whole volume.
    """
    box = ndimage.find_objects((pred | truth).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    pad = [(1, 1)] * pred.ndim
    y_pred, y = (torch.from_numpy(np.pad(m[box], pad)) for m in (pred, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices inside its own helpers
        _, (pred_to_truth, truth_to_pred), _ = get_edge_surface_distance(y_pred, y, symmetric=True)
    return np.asarray(pred_to_truth, dtype=np.float64), np.asarray(truth_to_pred, dtype=np.float64)


def _surface(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """HD95, ASSD and NSD from one pair of distance sets, as MONAI's compute_hausdorff_distance
    (percentile=95), compute_average_surface_distance (symmetric) and compute_surface_dice define
    them (tested against those functions), with this module's empty-volume convention."""
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if has_pred != has_truth:
        worst = _grid_diagonal(truth.shape)
        return {"hd95": worst, "assd": worst, "nsd": 0.0}
    forward, backward = surface_distances(pred, truth)
    both = np.concatenate([forward, backward])
    return {
        "hd95": float(max(np.quantile(forward, 0.95), np.quantile(backward, 0.95))),
        "assd": float(both.mean()),
        "nsd": float(np.count_nonzero(both <= tolerance) / len(both)),
    }


def volume_difference(pred: np.ndarray, truth: np.ndarray) -> int:
    """Absolute difference of the lesion voxel counts."""
    return abs(int(np.count_nonzero(pred)) - int(np.count_nonzero(truth)))


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Lesion-wise detection over face-connected components: a truth component is found, and a
    predicted component hits, when it shares at least one voxel with the other mask."""
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
        "volume_difference": volume_difference(pred, truth),
        **lesion_detection(pred, truth),
    }
