"""Figures read back: subset colours and zero-Dice marks in the bar chart, labelled and windowed overlays."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from brainseg.reporting.figures import GROUP_COLOURS, ZERO_MARK, bar_chart, overlay, window


def _has(image: np.ndarray, hex_colour: str, tol: int = 12) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(image[..., :3].astype(int) - rgb).max(axis=-1) <= tol).any())


def test_bar_chart_colours_subsets_and_marks_zero_dice(tmp_path: Path) -> None:
    scores = {"a": 0.8, "b": 0.0, "c": 0.6, "d": 0.7}
    groups = {"a": "train", "b": "val", "c": "val", "d": "test"}
    chart = iio.imread(bar_chart(scores, tmp_path / "dsc.png", groups=groups, stats_groups=("val", "test"),
                                 note="run/best.ckpt\nthreshold 0.5, post-processing: none"))
    assert all(_has(chart, GROUP_COLOURS[g]) for g in ("train", "val", "test")) and not _has(chart, GROUP_COLOURS["unseen"])
    assert _has(chart, ZERO_MARK)
    without_zero = iio.imread(bar_chart({**scores, "b": 0.1}, tmp_path / "no_zero.png", groups=groups))
    assert not _has(without_zero, ZERO_MARK)


def test_overlay_names_patient_and_slice() -> None:
    grey = np.full((128, 128), 60, np.uint8)
    plain = overlay(grey, np.zeros_like(grey), None)
    labelled = overlay(grey, np.zeros_like(grey), None, "TCGA_XX_0000\nslice 7")
    written = (labelled != plain).any(axis=-1)
    assert written[:40].sum() > 50 and not written[60:].any()  # text in the top-left corner only
    assert (labelled == 255).all(axis=-1).any()


def test_window_stretches_a_dark_scanner_to_the_full_range() -> None:
    rng = np.random.default_rng(0)
    dark = np.zeros((4, 32, 32), np.uint8)
    dark[:, 8:24, 8:24] = rng.integers(5, 40, (4, 16, 16))  # a dim head on a black background
    windowed = window(dark)
    assert windowed.dtype == np.uint8 and windowed.max() == 255 and np.percentile(windowed[:, 8:24, 8:24], 50) > 80
    assert (windowed[:, :8] == 0).all() and window(np.zeros((2, 4, 4), np.uint8)).max() == 0
