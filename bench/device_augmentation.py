"""kornia's mask-aware augmentation against a minimal affine_grid/grid_sample version of the
reference preset (scale +-5%, rotation +-15 deg, horizontal flip 0.5; images bilinear, masks
nearest), on whole batches: the measurement behind using kornia for `data.loader=device`.

    python bench/device_augmentation.py --device cpu --size 256 --batch-sizes 16 64

Prints milliseconds per batch and samples/s; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from speed import synchronize  # bench/speed.py, next to this script

from brainseg.cli import exit_status
from brainseg.data.device_augmentation import device_augmentation

CONF = Path(__file__).resolve().parents[1] / "conf"


def grid_sample_reference(
    image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference preset in a few lines of torch: one random affine per sample,
    flip folded in."""
    n = image.shape[0]
    angle = torch.empty(n, device=image.device).uniform_(-15, 15) * math.pi / 180
    scale = torch.empty(n, device=image.device).uniform_(0.95, 1.05)
    flip = torch.where(torch.rand(n, device=image.device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input coordinates
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, torch.zeros_like(cos)], 1),
            torch.stack([sin * flip, cos, torch.zeros_like(cos)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image, mask


def time_per_batch(fn, image: torch.Tensor, mask: torch.Tensor, repeats: int) -> float:
    fn(image, mask)
    synchronize(image.device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(image, mask)
    synchronize(image.device)
    return (time.perf_counter() - start) / repeats


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data/augmentation=reference"])
    kornia_reference = device_augmentation(instantiate(cfg.data.augmentation)).to(device)
    print(
        f"device {device}, {args.size} px, threads {torch.get_num_threads()}, "
        f"{args.repeats} batches each"
    )
    rows = []
    for batch in args.batch_sizes:
        image = torch.rand(batch, 3, args.size, args.size, device=device)
        mask = (image[:, :1] > 0.5).float()
        for name, fn in (
            ("kornia AugmentationSequential", kornia_reference),
            ("affine_grid/grid_sample", grid_sample_reference),
        ):
            seconds = time_per_batch(fn, image, mask, args.repeats)
            print(
                f"batch {batch:>3}  {name:<30} {1000 * seconds:8.1f} ms/batch  "
                f"{batch / seconds:8.0f} samples/s",
                flush=True,
            )
            rows.append({"batch_size": batch, "method": name, "ms_per_batch": 1000 * seconds})
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "rows": rows}, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return exit_status(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
