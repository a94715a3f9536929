"""Figures read back: subset colours and zero-Dice marks in the bar chart,
labelled and windowed overlays."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from brainseg.reporting import figures
from brainseg.reporting.figures import (
    GROUP_COLOURS,
    PREDICTION_RGB,
    TRUTH_RGB,
    bar_chart,
    overlay,
    window,
)


def _has(image: np.ndarray, hex_colour: str, tol: int = 12) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(image[..., :3].astype(int) - rgb).max(axis=-1) <= tol).any())


def test_bar_chart_colours_subsets_and_marks_zero_dice(tmp_path: Path) -> None:
    scores = {"a": 0.8, "b": 0.0, "c": 0.6, "d": 0.7}
    groups = {"a": "train", "b": "val", "c": "val", "d": "test"}
    chart = iio.imread(
        bar_chart(
            scores,
            tmp_path / "dsc.png",
            groups=groups,
            stats_groups=("val", "test"),
            note="run/best.ckpt\nthreshold 0.5, post-processing: none",
        )
    )
    assert all(_has(chart, GROUP_COLOURS[g]) for g in ("train", "val", "test")) and not _has(
        chart, GROUP_COLOURS["unseen"]
    )


def test_zero_dice_marker_keeps_the_patients_subset_colour(tmp_path: Path) -> None:
    """A zero score has no bar: its cross carries the subset colour (the legend sits on the right,
    so the colour in the left part of the picture can only be the cross)."""
    chart = iio.imread(
        bar_chart(
            {"a": 0.8, "b": 0.0}, tmp_path / "dsc.png", {"a": "train", "b": "unseen"}, ("unseen",)
        )
    )
    plot_side = chart[:, : chart.shape[1] * 6 // 10]
    assert _has(plot_side, GROUP_COLOURS["unseen"], tol=40)
    assert _has(chart, "#000000")  # the legend's `Dice 0` cross


def test_training_curves_tick_whole_epochs(tmp_path: Path, monkeypatch) -> None:
    from brainseg.runfiles import VAL_DSC, EpochScores

    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    history = [
        EpochScores(e, 10 * e, {VAL_DSC: 0.1 * e, "val/loss": 1 / e}, 1 / e) for e in (1, 2, 3)
    ]
    figures.training_curves(history, history[-1], tmp_path / "curves.png")
    for ax in saved[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_overlay_names_patient_and_slice() -> None:
    grey = np.full((128, 128), 60, np.uint8)
    plain = overlay(grey, np.zeros_like(grey), None)
    labelled = overlay(grey, np.zeros_like(grey), None, "TCGA_XX_0000\nslice 7")
    written = (labelled != plain).any(axis=-1)
    assert written[:40].sum() > 50 and not written[40:110].any()  # label top left, legend bottom
    assert (labelled == 255).all(axis=-1).any()
    legend = labelled[110:]
    for colour in (TRUTH_RGB, PREDICTION_RGB):
        assert (np.abs(legend.astype(int) - colour).max(axis=-1) < 80).any(), colour


def test_window_stretches_a_dark_scanner_to_the_full_range() -> None:
    rng = np.random.default_rng(0)
    dark = np.zeros((4, 32, 32), np.uint8)
    dark[:, 8:24, 8:24] = rng.integers(5, 40, (4, 16, 16))  # a dim head on a black background
    windowed = window(dark)
    assert (
        windowed.dtype == np.uint8
        and windowed.max() == 255
        and np.percentile(windowed[:, 8:24, 8:24], 50) > 80
    )
    assert (windowed[:, :8] == 0).all() and window(np.zeros((2, 4, 4), np.uint8)).max() == 0


def _case_volumes(missed_slice: int, false_slice: int) -> tuple[np.ndarray, ...]:
    image = np.full((6, 32, 32, 3), 80, np.uint8)
    truth = np.zeros((6, 32, 32), bool)
    truth[1:5, 10:20, 10:20] = True
    prediction = truth.copy()
    prediction[missed_slice] = False  # the whole lesion of this slice missed
    prediction[false_slice, 25:30, 25:30] = True  # a false blob
    return image, truth, prediction


def test_failure_case_picks_the_slices_with_most_missed_and_most_false_lesion() -> None:
    image, truth, prediction = _case_volumes(missed_slice=3, false_slice=0)
    case = figures.failure_case(
        "p", image, truth, prediction, 0.7, numbers=(11, 12, 13, 14, 15, 16)
    )
    assert case.missed[0] == 14 and case.false[0] == 11
    assert (case.truth_voxels, case.predicted_voxels) == (400, 325)
    perfect = figures.failure_case("q", image, truth, truth, 1.0)
    assert perfect.missed is None and perfect.false is None


def test_failure_gallery_shows_the_worst_patients_lowest_first(tmp_path: Path, monkeypatch) -> None:
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    image, truth, prediction = _case_volumes(missed_slice=2, false_slice=4)
    empty = np.zeros_like(truth)
    cases = [
        figures.failure_case("good", image, truth, truth, 1.0),
        figures.failure_case("worst", image, truth, empty, 0.0, uncertainty=0.25),
        figures.failure_case("middle", image, truth, prediction, 0.8),
        figures.failure_case("no_lesion", image, empty, prediction, 0.0),
    ]
    figures.failure_gallery(cases, tmp_path / "failures.png", worst=3)
    labels = [row.get_ylabel() for row in saved[0].axes[::2]]
    assert [label.splitlines()[0] for label in labels] == ["worst", "no_lesion", "middle"]
    assert "empty prediction" in labels[0] and "uncertainty 0.25" in labels[0]
    assert "empty truth" in labels[1]
    legend = saved[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["truth", "prediction"]


@pytest.mark.parametrize("worst", [1, 6])
def test_failure_gallery_title_clears_the_panel_titles(
    tmp_path: Path, monkeypatch, worst: int
) -> None:
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    image, truth, prediction = _case_volumes(missed_slice=2, false_slice=4)
    cases = [figures.failure_case(str(k), image, truth, prediction, 0.5) for k in range(worst)]
    figures.failure_gallery(cases, tmp_path / "failures.png", worst=worst)
    fig = saved[0]
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes[:2]:  # the first row's panel titles
        assert title.y0 > ax.title.get_window_extent(renderer).y1, ax.title.get_text()
    assert fig._suptitle.get_text().startswith("The patient " if worst == 1 else "The 6 patients ")


def test_heat_map_orders_tied_patients_by_name(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    from brainseg.reporting.figures import heat_map

    shown = []
    set_xticks = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_xticks",
        lambda ax, ticks, labels=None, **kw: shown.append(labels) or set_xticks(ax, ticks, labels),
    )
    tied = {f"TCGA_{i:02d}": 0.5 for i in range(12)}  # a set's order differs between processes
    heat_map({"model=unet": {**tied, "worst": 0.1}}, tmp_path / "heatmap.png", "per patient")
    assert shown == [["worst", *sorted(tied)]]
