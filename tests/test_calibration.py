"""Temperature scaling, calibration error and the uncertainty score's power to flag failures."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg.metrics.calibration import (
    calibrated,
    expected_calibration_error,
    fit_temperature,
    reliability,
    sample_pixels,
)
from brainseg.metrics.uncertainty import flags_failures, lesion_entropy


def _over_confident(n: int = 50_000, sharpen: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities q; the model reports sigmoid(sharpen * logit(q))."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0.02, 0.98, n)
    truth = rng.uniform(size=n) < q
    probs = 1 / (1 + np.exp(-sharpen * np.log(q / (1 - q))))
    return probs, truth


def test_fitted_temperature_undoes_over_confidence_and_lowers_ece() -> None:
    probs, truth = _over_confident()
    temperature = fit_temperature(probs, truth)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(probs, truth)
    after = expected_calibration_error(calibrated(probs, temperature), truth)
    assert after < before / 4 and after < 0.02
    assert ((calibrated(probs, temperature) > 0.5) == (probs > 0.5)).all()  # masks unchanged


def test_reliability_bins_count_every_pixel_once() -> None:
    probs, truth = _over_confident(1000)
    mean_p, frequency, counts = reliability(probs, truth, bins=10)
    assert counts.sum() == 1000 and len(mean_p) == len(frequency) == 10
    filled = counts > 0
    assert ((mean_p[filled] >= 0) & (mean_p[filled] <= 1)).all()


def test_pixel_sample_is_uniform_seeded_and_bounded() -> None:
    probs = np.linspace(0, 1, 10_000).reshape(10, 10, 100)
    truth = probs > 0.5
    p1, t1 = sample_pixels(probs, truth, seed=3, size=500)
    p2, _ = sample_pixels(probs, truth, seed=3, size=500)
    assert len(p1) == 500 and np.array_equal(p1, p2) and (t1 == (p1 > 0.5)).all()
    assert len(sample_pixels(probs, truth, seed=3, size=10**6)[0]) == 10_000


def test_failure_auroc_and_spearman_on_a_constructed_case() -> None:
    # failures (Dice < 0.5) score 0.9 and 0.2, good patients 0.5 and 0.1: 3 of 4 pairs ordered
    result = flags_failures([0.9, 0.5, 0.2, 0.1], [0.1, 0.8, 0.3, 0.9])
    assert result["auroc_for_failure"] == pytest.approx(0.75)
    assert result["n"] == 4 and result["failures"] == 2
    perfect = flags_failures([0.9, 0.7, 0.3, 0.1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["auroc_for_failure"] == 1.0 and perfect["spearman_with_dice"] == -1.0
    assert flags_failures([0.1, 0.2, 0.3], [0.9, 0.8, 0.7])["auroc_for_failure"] is None


def test_lesion_entropy_is_higher_for_an_unsure_lesion() -> None:
    sharp = np.zeros((3, 20, 20))
    sharp[1, 5:10, 5:10] = 0.99
    blurry = sharp.copy()
    blurry[1, 5:10, 5:10] = 0.6
    blurry[1, 4, 5:10] = 0.4  # an unsure border
    assert lesion_entropy(np.zeros((3, 20, 20))) == 0.0
    assert 0 < lesion_entropy(sharp) < lesion_entropy(blurry) <= 1


def test_reliability_diagram_labels_both_curves(tmp_path, monkeypatch) -> None:
    from brainseg.reporting import figures

    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    probs, truth = _over_confident(2000)
    bins = reliability(probs, truth)
    figures.reliability_diagram(bins, bins, (0.06, 0.01), 2.5, tmp_path / "calibration.png")
    texts = [t.get_text() for t in saved[0].axes[0].get_legend().get_texts()]
    assert texts == [
        "perfectly calibrated",
        "uncalibrated (ECE 0.0600)",
        "temperature 2.50 (ECE 0.0100)",
    ]
