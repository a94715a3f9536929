"""Training-speed benchmark: samples/s, data-wait share and peak memory per data path and setting.

    python bench/train_speed.py --root ../shared/data/lgg --device cuda  # 256 px, reference model
    python bench/train_speed.py --root ../shared/data/lgg --device cpu --size 64 --steps 4

Each row times `--steps` training steps (after `--warmup` untimed ones) of the reference protocol's
model, loss and optimizer (U-Net/ResNet34, Dice, Adam) with the reference augmentation:
fetching the batch (and, for loader=device, drawing and augmenting it on the device), the
z-score, forward, backward and optimizer step. Rows vary one setting at a time from the
baseline (loader=device, 32-true, no channels_last, no torch.compile), each at every batch size.
`data ms` is the time per batch spent waiting for data: the model's compute is the same for every
loader, so it compares the data paths even on a machine whose other load makes samples/s noisy.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from speed import SpeedMeter, peak_memory_mb, synchronize  # bench/speed.py, next to this script

from brainseg.cli import exit_status
from brainseg.config import instantiate_setting, to_plain
from brainseg.data.dataset import normalize_batch
from brainseg.training.module import SegmentationModule
from brainseg.training.speed_settings import apply_speed_settings

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Setting:
    loader: str = "device"
    workers: int = 0
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    batch_size: int = 16

    def label(self) -> str:
        loader = f"workers ({self.workers})" if self.loader == "workers" else "device"
        return (
            f"{loader:<12} {self.precision:<10} {'on' if self.channels_last else 'off':<13} "
            f"{'on' if self.compile else 'off':<8} {self.batch_size:>5}"
        )


def settings(
    batch_sizes: list[int], workers: list[int], precisions: list[str], compile_rows: bool
) -> list[Setting]:
    rows = []
    for batch in batch_sizes:
        base = Setting(batch_size=batch)
        rows += [replace(base, loader="workers", workers=w) for w in workers] + [base]
        rows += [replace(base, precision=p) for p in precisions if p != "32-true"]
        rows.append(replace(base, channels_last=True))
        if compile_rows:
            rows.append(replace(base, compile=True))
    return rows


def compose_config(
    root: str, size: int, cache_dir: str, setting: Setting, extra: list[str]
) -> object:
    overrides = [
        "experiment=reference",
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        f"data.preprocess.image_size={size}",
        f"data.loader={setting.loader}",
        f"data.num_workers={setting.workers}",
        f"data.batch_size={setting.batch_size}",
        f"channels_last={setting.channels_last}",
        f"compile={setting.compile}",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    OmegaConf.resolve(cfg.data)
    return cfg


class _Trainer:
    """What the DataModule reads from a Lightning trainer: the device and the ranks."""

    def __init__(self, device: torch.device) -> None:
        self.strategy = type("Strategy", (), {"root_device": device})()
        self.global_rank, self.world_size = 0, 1


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def measure(
    args: argparse.Namespace, setting: Setting, device: torch.device
) -> tuple[float, float, float, float]:
    """samples/s, data-wait fraction, data milliseconds per batch, peak memory (MB) of one
    setting."""
    cfg = compose_config(args.root, args.size, args.cache_dir, setting, args.override)
    datamodule = instantiate_setting("data", cfg.data)
    datamodule.trainer = _Trainer(device)
    datamodule.setup("fit")
    module = SegmentationModule(
        to_plain(cfg.model), to_plain(cfg.loss), to_plain(cfg.optimizer)
    ).to(device)
    module.train()
    apply_speed_settings(module.net, cfg.channels_last, cfg.compile)
    optimizer = instantiate_setting(
        "optimizer", to_plain(cfg.optimizer), params=module.parameters()
    )
    scaler = torch.amp.GradScaler(device.type, enabled=setting.precision == "16-mixed")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter, batches = SpeedMeter(), iter(datamodule.train_dataloader())
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            meter = SpeedMeter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(datamodule.train_dataloader())
            batch = next(batches)
        batch = normalize_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        image = batch["image"]
        synchronize(device)
        meter.data()
        with autocast(device, setting.precision):
            logits = module.net(image)
        loss = module.loss(logits, batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        meter.step(image.shape[0])
    return (
        meter.samples_per_s,
        meter.data_fraction,
        1000 * meter.data_s / meter.steps,
        peak_memory_mb(device),
    )


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA GPU is visible")
    precisions = list(args.precisions)
    if device.type == "cpu" and "16-mixed" in precisions:
        precisions.remove("16-mixed")
        print(
            "note: 16-mixed skipped on CPU "
            "(float16 autocast with a gradient scaler is a GPU setting)"
        )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores"
    )
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(
        f"data: {args.root}, {args.size} px; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps per row"
    )
    print(
        f"{'loader':<12} {'precision':<10} {'channels_last':<13} {'compile':<8} {'batch':>5} "
        f"{'samples/s':>10} {'data wait':>10} {'data ms':>8} {'peak MB':>9}"
    )
    rows = []
    for setting in settings(args.batch_sizes, args.workers, precisions, not args.no_compile):
        start = time.perf_counter()
        try:
            rate, wait, data_ms, memory = measure(args, setting, device)
        except Exception as exc:  # noqa: BLE001 - one setting failing (e.g. compile) must not hide the others
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"{setting.label()} failed: {error}")
            rows.append({**asdict(setting), "error": error})
        else:
            print(
                f"{setting.label()} {rate:>10.1f} {100 * wait:>9.1f}% {data_ms:>8.1f} "
                f"{memory:>9.0f}   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            figures = {"samples_per_s": rate, "data_wait": wait, "data_ms": data_ms}
            rows.append({**asdict(setting), **figures, "peak_mb": memory})
        if args.json:  # after every row: a run stopped midway keeps what it measured
            header = {"device": name, "torch": torch.__version__, "size": args.size}
            Path(args.json).write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    if device.type == "cpu":
        print(
            "peak MB on CPU: the process's resident-memory high-water mark so far "
            "(it only grows down the table)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root in the kaggle_3m layout")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--size", type=int, default=256, help="image size (data.preprocess.image_size)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per row (compile, allocator, workers)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({0, 2, os.cpu_count() or 1}),
        help="DataLoader worker counts for loader=workers",
    )
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "brainseg-bench-cache"),
        help="preprocessed-volume cache (filled on the first row)",
    )
    parser.add_argument(
        "--override", nargs="+", default=[], help="more overrides, e.g. data.split.n_val=1"
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return exit_status(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
