"""Put overlay PNGs side by side into one figure (how docs/images/overlays*.png are made):
`python scripts/montage.py docs/images/overlays_real.png out/overlays/<patient>/<patient>_{12,14,16}.png`."""

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python scripts/montage.py OUTPUT.png INPUT.png [INPUT.png ...]")
    images = [iio.imread(p)[..., :3] for p in sys.argv[2:]]
    gap = np.zeros((images[0].shape[0], 4, 3), np.uint8)
    row = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)
    iio.imwrite(Path(sys.argv[1]), row, optimize=True)
