"""Cost of the per-volume metrics (brainseg.metrics.functional) that validation
computes each epoch.

    python bench/volume_metrics.py --root ../shared/data/lgg --patients 10 --image-size 256

Prints figures only; nothing is asserted. The volumes are the preprocessed ones training validates
on; the prediction stands in for a partly trained model's: the truth shifted by 3 pixels, dilated
once, with a false-positive blob on every fifth slice. The cache goes to a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainseg.cli import exit_status
from brainseg.data.cache import VolumeCache
from brainseg.data.preprocess import PreprocessConfig
from brainseg.data.reader import find_patients
from brainseg.metrics import dice_score, volume_metrics


def imperfect_prediction(truth: np.ndarray) -> np.ndarray:
    pred = ndimage.binary_dilation(np.roll(truth, 3, axis=2))
    pred[::5, 10:20, 10:20] = True
    return pred


def run(args: argparse.Namespace) -> None:
    patients = find_patients(args.root)[: args.patients]
    with tempfile.TemporaryDirectory() as cache:
        volumes = VolumeCache(cache, PreprocessConfig(image_size=args.image_size)).load_many(
            patients, 2
        )
        pairs = [(imperfect_prediction(v.mask.astype(bool)), v.mask.astype(bool)) for v in volumes]
    slices = sum(t.shape[0] for _, t in pairs)
    for name, score in (
        ("Dice only", dice_score),
        ("every metric (volume_metrics)", volume_metrics),
    ):
        score(*pairs[0])  # warm-up (imports, MONAI lazy loading)
        start = time.perf_counter()
        for pred, truth in pairs:
            score(pred, truth)
        seconds = time.perf_counter() - start
        print(
            f"{name}: {seconds:.2f} s for {len(pairs)} patients "
            f"({slices} slices at {args.image_size} px), "
            f"{1000 * seconds / len(pairs):.0f} ms per patient"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=256)
    return exit_status(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
