"""Benchmark of the data pipeline: preprocessing cold and warm (cache), peak memory,
loader throughput.

    python bench/data_pipeline.py --root ../shared/data/lgg

Prints figures only; nothing is asserted. The cache goes to a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from brainseg.cli import exit_status
from brainseg.data.cache import VolumeCache
from brainseg.data.datamodule import check_augmentation
from brainseg.data.dataset import SliceDataset, normalize_batch
from brainseg.data.preprocess import PreprocessConfig
from brainseg.data.reader import find_patients
from brainseg.data.sampling import SliceSampler

CONF = Path(__file__).resolve().parents[1] / "conf"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_all(
    root: Path, cache_dir: Path, cfg: PreprocessConfig, workers: int
) -> tuple[list, float]:
    start = time.perf_counter()
    volumes = VolumeCache(cache_dir, cfg).load_many(find_patients(root), workers)
    return volumes, time.perf_counter() - start


def loader_throughput(
    volumes: list, augmentation: str, workers: int, batches: int, batch_size: int
) -> float:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data/augmentation={augmentation}"])
    dataset = SliceDataset(volumes, check_augmentation(instantiate(cfg.data.augmentation)))
    sampler = SliceSampler("lesion_weighted", dataset.lesion_areas(), seed=0)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    iterator = (batch for _ in itertools.count() for batch in loader)  # epoch after epoch
    for _ in range(5):  # warm-up: worker start, first page faults
        normalize_batch(next(iterator))
    start = time.perf_counter()
    for _ in range(batches):
        normalize_batch(next(iterator))  # what the DataModule does after the transfer to the device
    return batches * batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> None:
    """Measure and print the figures."""
    cfg = PreprocessConfig(image_size=args.image_size)
    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="brainseg-bench-") as tmp:
        volumes, cold = load_all(Path(args.root), Path(tmp), cfg, args.preprocess_workers)
        peak_cold = peak_rss_mb()
        volumes, warm = load_all(Path(args.root), Path(tmp), cfg, args.preprocess_workers)
        slices = sum(len(v.image) for v in volumes)
        print(
            f"data: {args.root}: {len(volumes)} patients, {slices} slices after preprocessing, "
            f"{args.image_size} px"
        )
        print(
            "preprocessing cold (read + preprocess + write cache, "
            f"{args.preprocess_workers} processes): {cold:.2f} s"
        )
        print(f"preprocessing warm (memory-mapped cache):             {warm:.3f} s")
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"peak memory (RSS): main process {peak_cold:.0f} MB "
            f"({baseline:.0f} MB before loading: Python, torch), "
            f"largest preprocessing process {children:.0f} MB"
        )
        for workers in (0, 2):
            rate = loader_throughput(
                volumes, args.augmentation, workers, args.batches, args.batch_size
            )
            print(
                f"train loader, {args.augmentation} augmentation, {workers} workers: "
                f"{rate:.0f} samples/s"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="data root in the kaggle_3m layout")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--augmentation", default="reference", help="a conf/data/augmentation option"
    )
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preprocess-workers", type=int, default=2)
    return exit_status(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
