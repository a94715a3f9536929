"""Figures: the per-patient Dice bar chart and FLAIR overlays (PNG per slice, GIF per patient)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

PREDICTION_RGB = (255, 0, 0)
TRUTH_RGB = (0, 255, 0)
FLAIR_CHANNEL = 1


def bar_chart(scores: dict[str, float], path: Path, title: str = "Per-volume Dice", show_stats: bool = True) -> Path:
    """Horizontal bars (sorted), with mean and median lines, as in the reference's per-patient figure."""
    names = sorted(scores, key=scores.get)
    values = np.array([scores[n] for n in names])
    fig, ax = plt.subplots(figsize=(8 if show_stats else 10, max(3.0, 0.32 * len(names) + 1.2)), dpi=100)
    ax.barh(np.arange(len(names)), values, color="#4c72b0")
    if show_stats:
        ax.axvline(values.mean(), color="tab:red", linestyle="--", label=f"mean {values.mean():.3f}")
        ax.axvline(np.median(values), color="tab:green", linestyle="-", label=f"median {np.median(values):.3f}")
    else:
        for y, v in enumerate(values):
            ax.text(min(v, 1.0), y, f" {v:.3f}", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice similarity coefficient")
    ax.set_title(title)
    if show_stats:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, path)  # parallel sweep jobs may refresh the same chart


def training_curves(history: list[dict], path: Path) -> Path:
    """Losses and validation per-volume Dice per epoch (the best epoch marked), side by side."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, (losses, dice) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        points = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if points:
            losses.plot(*zip(*points), marker=".", label=label)
    losses.set(xlabel="epoch", ylabel="loss", title="Losses")
    dice.plot(epochs, [h["dsc_volume_mean"] for h in history], marker=".", label="mean")
    medians = [(e, h["dsc_volume_median"]) for e, h in zip(epochs, history) if h.get("dsc_volume_median") is not None]
    if medians:
        dice.plot(*zip(*medians), marker=".", label="median")
    best = max(history, key=lambda h: h["dsc_volume_mean"])
    dice.axvline(best["epoch"] + 1, color="grey", linestyle=":", label=f"best {best['dsc_volume_mean']:.3f}")
    dice.set(xlabel="epoch", ylabel="per-volume Dice", title="Validation per-volume Dice", ylim=(0, 1))
    for ax in (losses, dice):
        ax.legend(frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write via a temporary file: parallel sweep jobs and readers never see half a picture."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def overlay(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """The FLAIR channel in grey with the prediction outlined in red and the truth in green."""
    flair = image[..., FLAIR_CHANNEL]
    rgb = np.repeat(flair[..., None], 3, axis=2).copy()
    for mask, colour in ((truth, TRUTH_RGB), (prediction, PREDICTION_RGB)):
        if mask is not None and mask.any():
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, contours, -1, colour, 1)
    return rgb


def write_overlays(name: str, numbers: tuple[int, ...], image: np.ndarray, prediction: np.ndarray,
                   truth: np.ndarray | None, out_dir: Path) -> list[Path]:
    """PNGs of the slices with a lesion or a prediction, and one GIF through all slices."""
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    frames, written = [], []
    for z, number in enumerate(numbers):
        frame = overlay(image[z], prediction[z], None if truth is None else truth[z])
        frames.append(frame)
        if prediction[z].any() or (truth is not None and truth[z].any()):
            path = folder / f"{name}_{number}.png"
            iio.imwrite(path, frame)
            written.append(path)
    gif = out_dir / f"{name}.gif"
    iio.imwrite(gif, np.stack(frames), duration=120, loop=0)
    return [*written, gif]
