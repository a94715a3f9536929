"""Figures: the per-patient Dice bar chart and FLAIR overlays (PNG per slice, GIF per patient)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from brainseg.runfiles import EpochScores

PREDICTION_RGB = (255, 0, 0)
TRUTH_RGB = (0, 255, 0)
FLAIR_CHANNEL = 1
Rgb = tuple[int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND = (("truth", TRUTH_RGB), ("prediction", PREDICTION_RGB))

GROUP_COLOURS = {"train": "#9e9e9e", "val": "#4c72b0", "test": "#8172b3", "unseen": "#dd8452"}
# Characters per line of a configuration label in the sweep figures before it wraps.
LABEL_CHARACTERS = 40


def bar_chart(
    scores: Mapping[str, float],
    path: Path,
    groups: Mapping[str, str],
    stats_groups: Collection[str],
    note: str | None = None,
) -> Path:
    """Per-patient Dice bars, sorted and coloured by each patient's group (its subset), with the
    mean and median over the `stats_groups` only; `note` says under the title what produced the
    scores. A zero score, which has no bar, gets a cross in its group's colour."""
    names = sorted(scores, key=scores.get)
    values = np.array([scores[n] for n in names])
    labels = [groups[n] for n in names]
    colours = [GROUP_COLOURS.get(label, "#4c72b0") for label in labels]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.32 * len(names) + 1.6)), dpi=100)
    ys = np.arange(len(names))
    for label in dict.fromkeys(labels):
        chosen = [i for i, g in enumerate(labels) if g == label]
        ax.barh(ys[chosen], values[chosen], color=colours[chosen[0]], label=label)
    zeros = np.flatnonzero(values <= 0)
    if zeros.size:
        crosses = {"marker": "x", "s": 40, "zorder": 3, "clip_on": False}
        ax.scatter(
            np.full(zeros.size, 0.006), ys[zeros], color=[colours[i] for i in zeros], **crosses
        )
        ax.scatter([], [], color="black", label="Dice 0", **crosses)
    stats = values[[g in stats_groups for g in labels]]
    if stats.size:
        for name, value, colour, style in (
            ("mean", stats.mean(), "tab:red", "--"),
            ("median", np.median(stats), "tab:green", "-"),
        ):
            ax.axvline(value, color=colour, linestyle=style, label=f"held-out {name} {value:.3f}")
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice similarity coefficient")
    ax.set_title("Per-volume Dice" + (f"\n{note}" if note else ""), fontsize=10 if note else None)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def training_curves(history: list[EpochScores], best: EpochScores, path: Path) -> Path:
    """Losses and validation per-volume Dice per epoch side by side, the best epoch marked."""
    epochs = [h.epoch for h in history]
    fig, (losses, dice) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, values, label in (
        (losses, [h.train_loss for h in history], "train loss"),
        (losses, [h.value("val/loss") for h in history], "val loss"),
        (dice, [h.dsc_volume_mean for h in history], "mean"),
        (dice, [h.dsc_volume_median for h in history], "median"),
    ):
        points = [(e, v) for e, v in zip(epochs, values) if v is not None]
        if points:  # an epoch without the value is left out
            ax.plot(*zip(*points), marker=".", label=label)
    losses.set(xlabel="epoch", ylabel="loss", title="Losses")
    dice.axvline(
        best.epoch, color="grey", linestyle=":", label=f"best epoch {best.epoch} (by monitor)"
    )
    dice.set(
        xlabel="epoch", ylabel="per-volume Dice", title="Validation per-volume Dice", ylim=(0, 1)
    )
    for ax in (losses, dice):
        ax.legend(frameon=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write via a temporary file: parallel sweep jobs and readers never see half a picture."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _wrap_label(label: str, width: int = LABEL_CHARACTERS) -> str:
    """A configuration label on lines of `width` characters, broken between overrides only."""
    return textwrap.fill(label, width, break_long_words=False, break_on_hyphens=False)


def _fit_to_labels(
    fig: plt.Figure, ax: plt.Axes, plot: tuple[float, float], margins: tuple[float, float]
) -> None:
    """Size the figure to `plot` inches plus its tick labels and `margins` (title, axis labels,
    colour bar), so that no configuration or patient name is clipped or squeezed."""
    fig.draw_without_rendering()
    widest = max((t.get_window_extent().width for t in ax.get_yticklabels()), default=0.0)
    tallest = max((t.get_window_extent().height for t in ax.get_xticklabels()), default=0.0)
    fig.set_size_inches(
        plot[0] + widest / fig.dpi + margins[0], plot[1] + tallest / fig.dpi + margins[1]
    )


def strip_box_plot(scores: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """One row per configuration (in the given order, first on top): a box over its per-patient
    Dice, every patient as a dot, the mean as a red diamond."""
    names = [_wrap_label(n) for n in scores]
    row = max(0.55, 0.18 * max(n.count("\n") + 1 for n in names) + 0.2)
    fig, ax = plt.subplots(dpi=100, layout="constrained")
    rows = [np.array(list(values.values())) for values in scores.values()]
    positions = np.arange(len(names))[::-1]
    ax.boxplot(rows, positions=positions, orientation="horizontal", widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)
    for y, values in zip(positions, rows):
        spread = y + jitter.uniform(-0.15, 0.15, len(values))
        ax.scatter(values, spread, s=12, color="#4c72b0", alpha=0.7, zorder=3)
        ax.scatter([values.mean()], [y], marker="D", color="tab:red", zorder=4)
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("per-volume Dice (dots: patients, red diamond: mean)")
    ax.set_title(title)
    _fit_to_labels(fig, ax, (7.0, max(1.2, row * len(names))), (0.4, 1.0))
    return _save(fig, path)


def heat_map(scores: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Configurations x patients, coloured by Dice; patients sorted by their mean over
    configurations, so the ones every model fails sit together on the left."""
    names = list(scores)
    patients = sorted(  # ties by name: the same picture from every process
        {p for values in scores.values() for p in values},
        key=lambda p: (np.nanmean([scores[n].get(p, np.nan) for n in names]), p),
    )
    grid = np.array([[scores[n].get(p, np.nan) for p in patients] for n in names])
    labels = [_wrap_label(n) for n in names]
    row = max(0.4, 0.18 * max(n.count("\n") + 1 for n in labels) + 0.1)
    fig, ax = plt.subplots(dpi=100, layout="constrained")
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(np.arange(len(names)), labels, fontsize=8)
    ax.set_xticks(np.arange(len(patients)), patients, rotation=90, fontsize=6)
    fig.colorbar(image, ax=ax, label="per-volume Dice")
    ax.set_title(title)
    _fit_to_labels(fig, ax, (max(3.0, 0.14 * len(patients)), row * len(names)), (1.6, 0.7))
    return _save(fig, path)


def window(channel: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.5)) -> np.ndarray:
    """A volume channel stretched to uint8 between percentiles of its non-zero voxels, so that
    dark scanners and bright outliers both stay readable."""
    foreground = channel[channel > 0]
    if foreground.size == 0:
        return np.zeros(channel.shape, np.uint8)
    low, high = np.percentile(foreground, percentiles)
    scaled = np.clip((channel.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255
    return scaled.astype(np.uint8)


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None, label: str | None = None
) -> np.ndarray:
    """The FLAIR channel (of an (H, W, 3) slice, or a grey (H, W) one) with the prediction outlined
    in red and the truth in green; `label` is written in the top-left corner, with a legend of the
    two colours in the bottom-left one."""
    flair = image if image.ndim == 2 else image[..., FLAIR_CHANNEL]
    rgb = np.repeat(flair[..., None], 3, axis=2).copy()
    for mask, colour in ((truth, TRUTH_RGB), (prediction, PREDICTION_RGB)):
        if mask is not None and mask.any():
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(rgb, contours, -1, colour, 1)
    if label:  # white lines scaled to the width, top left; the legend bottom left
        lines = label.splitlines()
        scale = min(0.45, (rgb.shape[1] - 6) / max(_text_width(line, 1.0) for line in lines))
        step = int(np.ceil(30 * scale)) + 2
        for i, line in enumerate(lines, 1):
            _put_text(rgb, line, (3, step * i + 1), scale, (255, 255, 255))
        scale, x = min(0.4, rgb.shape[1] / 400), 3
        for word, colour in LEGEND:
            _put_text(rgb, word, (x, rgb.shape[0] - 5), scale, colour)
            x += _text_width(word + " ", scale)
    return rgb


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _put_text(
    rgb: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour: Rgb
) -> None:
    """Text in `colour` with a black outline (readable on any FLAIR), in place."""
    for fill, thickness in (((0, 0, 0), 3), (colour, 1)):
        cv2.putText(rgb, text, origin, FONT, scale, fill, thickness, cv2.LINE_AA)


def write_overlays(
    name: str,
    numbers: tuple[int, ...],
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None,
    out_dir: Path,
) -> list[Path]:
    """PNGs of the slices with a lesion or a prediction and a GIF through all slices, labelled with
    the patient and slice number, windowed over the patient's FLAIR."""
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    flair = window(image[..., FLAIR_CHANNEL])
    frames, written = [], []
    for z, number in enumerate(numbers):
        frame = overlay(
            flair[z], prediction[z], None if truth is None else truth[z], f"{name}\nslice {number}"
        )
        frames.append(frame)
        if prediction[z].any() or (truth is not None and truth[z].any()):
            path = folder / f"{name}_{number}.png"
            iio.imwrite(path, frame)
            written.append(path)
    gif = out_dir / f"{name}.gif"
    iio.imwrite(gif, np.stack(frames), duration=120, loop=0)
    return [*written, gif]


@dataclass
class FailureCase:
    """What the failure gallery shows of one patient: its scores and the slices (number, windowed
    FLAIR, truth, prediction) with the most missed and the most false lesion (None: none)."""

    name: str
    dice: float
    truth_voxels: int
    predicted_voxels: int
    uncertainty: float | None
    missed: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None
    false: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None


def failure_case(
    name: str,
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    dice: float,
    numbers: tuple[int, ...] | None = None,
    uncertainty: float | None = None,
) -> FailureCase:
    """The gallery's view of one patient from its (Z, H, W, 3) volume and boolean masks; only the
    two chosen slices are kept, so a whole dataset can be scanned one patient at a time."""
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    flair = window(image[..., FLAIR_CHANNEL])
    numbers = numbers or tuple(range(1, len(truth) + 1))

    def worst(voxels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        per_slice = voxels.sum(axis=(1, 2))
        z = int(per_slice.argmax())
        return (numbers[z], flair[z], truth[z], prediction[z]) if per_slice[z] else None

    return FailureCase(
        name,
        float(dice),
        int(truth.sum()),
        int(prediction.sum()),
        uncertainty,
        worst(truth & ~prediction),
        worst(prediction & ~truth),
    )


FAILURES_FILE = "failures.png"  # a run's, a prediction's or an evaluation's failure gallery


def failure_gallery(cases: list[FailureCase], path: Path, worst: int = 6) -> Path:
    """The `worst` patients by Dice, one row each: their most-missed and most-false slices, Dice,
    voxel counts and uncertainty where known; an empty truth or prediction said in words."""
    shown = sorted(cases, key=lambda c: c.dice)[:worst]
    fig, axes = plt.subplots(
        len(shown), 2, figsize=(6.4, 3.2 * len(shown) + 0.6), dpi=100, squeeze=False
    )
    for row, case in zip(axes, shown):
        for ax, (kind, chosen) in zip(row, (("missed", case.missed), ("false", case.false))):
            ax.set(xticks=[], yticks=[])
            if chosen is None:
                ax.set_facecolor("black")
                centre = {"ha": "center", "va": "center", "transform": ax.transAxes}
                ax.text(0.5, 0.5, f"no {kind} lesion", color="white", **centre)
                continue
            number, flair, truth, prediction = chosen
            ax.imshow(overlay(flair, prediction, truth))
            lost = int(((truth & ~prediction) if kind == "missed" else (prediction & ~truth)).sum())
            ax.set_title(f"most {kind} lesion: slice {number} ({lost} px)", fontsize=8)
        voxels = {"truth": case.truth_voxels, "prediction": case.predicted_voxels}
        empty = [f"empty {w}" for w, n in voxels.items() if n == 0]
        uncertainty = "" if case.uncertainty is None else f", uncertainty {case.uncertainty:.3g}"
        row[0].set_ylabel(
            f"{case.name}\nDice {case.dice:.3f}{uncertainty}\nvoxels: truth {case.truth_voxels},"
            f" predicted {case.predicted_voxels}" + (f"\n{', '.join(empty)}" if empty else ""),
            fontsize=8,
        )
    handles = [Patch(color=np.array(c) / 255, label=w) for w, c in LEGEND]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=9)
    height = fig.get_size_inches()[1]  # margins in inches: the gallery is as tall as its rows
    who = "The patient" if len(shown) == 1 else f"The {len(shown)} patients"
    fig.suptitle(f"{who} with the lowest Dice", fontsize=10, y=1 - 0.1 / height)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.35 / height))
    return _save(fig, path)


Bins = tuple[np.ndarray, np.ndarray, np.ndarray]  # mean probability, lesion frequency, pixels


def reliability_diagram(
    before: Bins, after: Bins, ece: tuple[float, float], temperature: float, path: Path
) -> Path:
    """Observed lesion frequency against predicted probability per bin, before and after the
    temperature (a calibrated model lies on the diagonal), with the pixels per bin below."""
    fig, (curve, counts) = plt.subplots(
        2, 1, figsize=(5, 6), dpi=100, height_ratios=(3, 1), sharex=True
    )
    curve.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for (mean_p, frequency, pixels), label, colour in (
        (before, f"uncalibrated (ECE {ece[0]:.4f})", "tab:red"),
        (after, f"temperature {temperature:.2f} (ECE {ece[1]:.4f})", "tab:blue"),
    ):
        filled = pixels > 0
        curve.plot(mean_p[filled], frequency[filled], marker="o", color=colour, label=label)
    curve.set(ylabel="observed lesion frequency", xlim=(0, 1), ylim=(0, 1))
    curve.set_title("Reliability of the lesion probability (validation pixels)", fontsize=10)
    curve.legend(frameon=False, fontsize=8, loc="upper left")
    edges = np.linspace(0, 1, len(before[2]) + 1)
    counts.bar(edges[:-1], before[2], width=np.diff(edges), align="edge", color="grey")
    counts.set(xlabel="predicted lesion probability", ylabel="pixels (uncalibrated)", yscale="log")
    fig.tight_layout()
    return _save(fig, path)
