"""A seeded, LGG-like synthetic dataset in the exact kaggle_3m layout, for the demo and the tests.

Each patient is an ellipsoidal head (3 channels: pre-contrast, FLAIR, post-contrast, uint8) with
textured tissue, dark ventricles, and one lesion that is bright on FLAIR over a run of consecutive
slices; the end slices are lesion-free. Masks are uint8 0/255, as in kaggle_3m.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import tifffile

from brainseg.cli import exit_status
from brainseg.errors import DataError

MARKER = ".brainseg-synthetic.json"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def make_patient(
    rng: np.random.Generator, size: int = 256, n_slices: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """One patient: images (Z, size, size, 3) uint8 and masks (Z, size, size) uint8 0/255."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-10, 10, 2)
    ay, ax = size * rng.uniform(0.32, 0.40), size * rng.uniform(0.26, 0.34)
    base = rng.uniform(80, 120, 3)
    if n_slices < 8:
        raise ValueError("a synthetic patient needs at least 8 slices (3 lesion-free at each end)")
    lesion_len = min(int(rng.integers(n_slices // 3, n_slices // 2 + 1)), n_slices - 6)
    lesion_z0 = int(rng.integers(3, n_slices - 3 - lesion_len + 1))
    ly, lx = rng.uniform(-0.45, 0.45, 2)
    lesion_r = size * rng.uniform(0.05, 0.11)
    boundary = _smooth_noise(rng, (size, size), size / 20)
    images = np.zeros((n_slices, size, size, 3), np.uint8)
    masks = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        zr = (2 * z + 1) / n_slices - 1  # -1..1 through the head
        scale = np.sqrt(max(1 - 0.85 * zr * zr, 0.05))
        head = ((yy - cy) / (ay * scale)) ** 2 + ((xx - cx) / (ax * scale)) ** 2
        brain = head < 1
        skull = (head >= 1) & (head < 1.15)
        ventricle = ((yy - cy) / (ay * scale * 0.25)) ** 2 + (
            (xx - cx) / (ax * scale * 0.15)
        ) ** 2 < 1
        texture = _smooth_noise(rng, (size, size), 3)
        slice_ = np.zeros((size, size, 3), np.float32)
        for c in range(3):
            slice_[..., c] = np.where(brain, base[c] + 12 * texture, 0)
            slice_[..., c] += np.where(skull, base[c] * 0.6, 0)
            slice_[..., c] -= np.where(ventricle & brain, base[c] * 0.45, 0)
        if lesion_z0 <= z < lesion_z0 + lesion_len:
            t = (z - lesion_z0 + 0.5) / lesion_len
            r = lesion_r * np.sqrt(max(1 - (2 * t - 1) ** 2, 0.15))
            dist = np.hypot(yy - (cy + ly * ay * scale), xx - (cx + lx * ax * scale))
            lesion = (dist < r * (1 + 0.25 * boundary)) & brain
            slice_[..., 0] -= np.where(lesion, 15, 0)
            slice_[..., 1] += np.where(lesion, 70 + 10 * texture, 0)
            slice_[..., 2] += np.where(lesion, 12, 0)
            masks[z] = lesion.astype(np.uint8) * 255
        slice_ += rng.normal(0, 3, slice_.shape).astype(np.float32) * (slice_ > 0)
        images[z] = np.clip(slice_, 0, 255).astype(np.uint8)
    return images, masks


def generate(
    out: str | Path,
    n_patients: int = 12,
    seed: int = 0,
    size: int = 256,
    slices: tuple[int, int] = (20, 28),
) -> list[str]:
    """Write the dataset to `out` (created); returns the patient folder names. An identical one is
    left as it is; any other non-empty folder is refused."""
    out = Path(out)
    params = {"n_patients": n_patients, "seed": seed, "size": size, "slices": list(slices)}
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose an empty folder")
    if out.exists() and any(out.iterdir()):
        if marker.exists() and json.loads(marker.read_text()).get("params") == params:
            return json.loads(marker.read_text())["patients"]
        raise DataError(
            f"{out}: folder exists and is not an identical synthetic dataset; "
            "choose an empty folder"
        )
    names = []
    for i in range(n_patients):
        rng = np.random.default_rng([seed, i])
        name = f"TCGA_SY_{1000 + i:04d}_{20000101 + i}"
        folder = out / name
        folder.mkdir(parents=True)
        images, masks = make_patient(rng, size, int(rng.integers(slices[0], slices[1] + 1)))
        for z, (image, mask) in enumerate(zip(images, masks), start=1):
            tifffile.imwrite(folder / f"{name}_{z}.tif", image, photometric="rgb")
            tifffile.imwrite(folder / f"{name}_{z}_mask.tif", mask)
        names.append(name)
    marker.write_text(json.dumps({"params": params, "patients": names}))
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="data/synthetic", help="output folder (default: data/synthetic)"
    )
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)

    def run() -> None:
        names = generate(args.out, args.patients, args.seed, args.size)
        print(f"synthetic LGG-like dataset: {len(names)} patients in {args.out}")

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
