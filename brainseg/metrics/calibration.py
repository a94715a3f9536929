"""Calibration of lesion probabilities: one temperature (Guo et al., 2017), so the ranking of
voxels and the masks at threshold 0.5 stay the same; the reliability bins are MONAI's."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics.calibration import calibration_binning
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

BINS = 15
# Drawn uniformly from each validation patient, so the lesion's share of them is the data's.
PIXELS_PER_PATIENT = 100_000
_EPS = 1e-6


def logits_of(probs: np.ndarray) -> np.ndarray:
    """The logits behind (averaged) probabilities, clipped away from 0 and 1."""
    return logit(np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS))


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their logits divided by `temperature`."""
    return expit(logits_of(probs) / temperature)


def sample_pixels(
    probs: np.ndarray, truth: np.ndarray, seed: int, size: int = PIXELS_PER_PATIENT
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` (probability, truth) pairs of one volume, drawn uniformly without repeats."""
    flat_p, flat_t = np.ravel(probs), np.ravel(truth)
    if flat_p.size > size:
        chosen = np.random.default_rng(seed).choice(flat_p.size, size, replace=False)
        flat_p, flat_t = flat_p[chosen], flat_t[chosen]
    return flat_p.astype(np.float32), flat_t.astype(bool)


def reliability(
    probs: np.ndarray, truth: np.ndarray, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: mean probability, observed lesion frequency, pixel count (NaN means when empty)."""
    y_pred = torch.as_tensor(np.ravel(probs), dtype=torch.float64).reshape(1, 1, -1)
    y = torch.as_tensor(np.ravel(truth), dtype=torch.float64).reshape(1, 1, -1)
    mean_p, frequency, counts = calibration_binning(y_pred, y, num_bins=bins)
    return mean_p[0, 0].numpy(), frequency[0, 0].numpy(), counts[0, 0].numpy()


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> float:
    """The pixel-weighted mean gap between predicted probability and observed frequency."""
    mean_p, frequency, counts = reliability(probs, truth, bins)
    filled = counts > 0
    gaps = np.abs(mean_p[filled] - frequency[filled])
    return float((gaps * counts[filled]).sum() / counts[filled].sum())


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the pixels' cross-entropy, searched on its log (it stays positive)
    between 1/148 and 148."""
    logits, target = logits_of(probs), np.asarray(truth, np.float64)

    def cross_entropy(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, scaled) - target * scaled))

    return float(np.exp(minimize_scalar(cross_entropy, bounds=(-5, 5), method="bounded").x))
