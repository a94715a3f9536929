"""One uncertainty score per patient (docs/metrics.md), and how well it flags the patients a model
fails: entropy is high where TTA views or ensemble members disagree about a lesion's extent."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import entr
from scipy.stats import mannwhitneyu, spearmanr

BORDER = 2  # pixels around the predicted lesion, in-plane
FAILURE_DICE = 0.5  # a patient below this Dice counts as a failure


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Binary entropy in bits of each probability (0: certain, 1: p = 0.5)."""
    p = np.asarray(probs, np.float64)
    return (entr(p) + entr(1 - p)) / np.log(2)


def lesion_entropy(probs: np.ndarray, threshold: float = 0.5) -> float:
    """The mean entropy over the predicted lesion and its border; 0 where nothing is predicted."""
    lesion = np.asarray(probs) > threshold
    if not lesion.any():
        return 0.0
    in_plane = ndimage.generate_binary_structure(2, 1)[None]  # (1, 3, 3): within each slice
    region = ndimage.binary_dilation(lesion, in_plane, iterations=BORDER)
    return float(entropy_map(np.asarray(probs)[region]).mean())


def flags_failures(
    scores: list[float], dice: list[float], cutoff: float = FAILURE_DICE
) -> dict[str, float | int | None]:
    """Spearman's correlation of the score with Dice, and its AUROC for `Dice < cutoff` (None
    without both kinds of patient)."""
    scores_a, dice_a = np.asarray(scores, np.float64), np.asarray(dice, np.float64)
    failed = dice_a < cutoff
    auroc = None
    if failed.any() and (~failed).any():
        u = mannwhitneyu(scores_a[failed], scores_a[~failed]).statistic
        auroc = float(u / (failed.sum() * (~failed).sum()))
    rho = spearmanr(scores_a, dice_a).statistic if len(scores_a) > 2 else float("nan")
    return {
        "n": len(scores_a),
        "failures": int(failed.sum()),
        "failure_dice_below": cutoff,
        "spearman_with_dice": None if np.isnan(rho) else float(rho),
        "auroc_for_failure": auroc,
    }
