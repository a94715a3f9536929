"""Disk a sweep's checkpoints need: one training step of the reference model (U-Net/ResNet34 at
256 px, Adam) through train.py's pipeline on tiny synthetic data, then the size of its files.

    python bench/checkpoint_disk.py [--jobs 40] [--overrides model.encoder_name=resnet50 ...]

Before the slim best checkpoint, each job kept two full-state files (best and a last.ckpt copy);
now it keeps the best as weights plus provenance and last.ckpt with the full state.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from brainseg.data.synthetic import generate
from brainseg.training.pipeline import train

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", n_patients=3, seed=0, size=256, slices=(8, 8))
        overrides = [
            f"data.root={tmp / 'data'}",
            f"data.cache_dir={tmp / 'cache'}",
            f"paths.output_dir={tmp / 'run'}",
            f"paths.root_dir={PROJECT}",
            "data.split.n_val=1",
            "data.batch_size=2",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "~callbacks.lr_monitor",
            "logger=[]",
            *args.overrides,
        ]
        with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        train(cfg)
        files = sorted((tmp / "run" / "checkpoints").glob("*.ckpt"))
        sizes = {p.name: p.stat().st_size for p in files}
        last = sizes.pop("last.ckpt")
        (best,) = sizes.values()
    mb = 1e6
    print(
        f"model: {cfg.model.arch}/{cfg.model.encoder_name}, {cfg.data.preprocess.image_size} px, optimizer {cfg.optimizer._target_}"
    )
    print(
        f"last.ckpt (full state): {last / mb:.1f} MB; best (weights + provenance): {best / mb:.1f} MB"
    )
    print(
        f"per job   before (best and last, both full state): {2 * last / mb:.1f} MB; after: {(best + last) / mb:.1f} MB"
    )
    print(
        f"{args.jobs}-job sweep before: {args.jobs * 2 * last / 1e9:.2f} GB; after: {args.jobs * (best + last) / 1e9:.2f} GB"
    )


if __name__ == "__main__":
    main()
