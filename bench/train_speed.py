"""Training-speed benchmark: samples/s with channels_last off and on, at 128 and 256 px.

    python -m bench.train_speed --root ../shared/data/lgg [--device cuda --precision 16-mixed]

Times `--steps` steps after `--warmup` untimed ones of the reference model, loss and optimizer
(U-Net/ResNet34, Dice, Adam) on training batches put on the device before the clock starts (the
loader is bench/data_pipeline.py's). Per size, `--pairs` pairs alternate off, on, so that a drift
in the machine's load hits both alike; on / off is taken per pair.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from bench.common import datamodule, machine, now, parser, show, spread
from brainseg.cli import exit_status
from brainseg.config import to_plain
from brainseg.data.dataset import normalize_batch
from brainseg.training.module import SegmentationModule
from brainseg.training.speed_settings import apply_speed_settings


def batches(args: argparse.Namespace, size: int, device: torch.device):
    """The reference config and `--warmup` + `--steps` training batches on the device."""
    sizes = [f"data.preprocess.image_size={size}", f"data.batch_size={args.batch}"]
    cfg, dm = datamodule(args, "experiment=reference", "data.num_workers=0", *sizes)
    loader = dm.train_dataloader()
    every = (batch for _ in itertools.count() for batch in loader)  # epoch after epoch
    drawn = itertools.islice(every, args.warmup + args.steps)
    return cfg, [{k: v.to(device) for k, v in batch.items()} for batch in drawn]


def samples_per_s(cfg, batches: list, channels_last: bool, args: argparse.Namespace) -> float:
    """One timing: a fresh network (same initial weights every time) trained on the batches."""
    device = batches[0]["image"].device
    # Queued GPU work is waited for, so that the clock reads the steps' own time.
    synchronize = (
        (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else lambda: None
    )
    torch.manual_seed(0)
    module = SegmentationModule(to_plain(cfg.model), to_plain(cfg.loss), to_plain(cfg.optimizer))
    module.to(device).train()
    apply_speed_settings(module.net, channels_last, compile=False)
    optimizer = module.configure_optimizers()  # the reference's Adam, no scheduler
    half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")
    for step, batch in enumerate(batches):
        if step == args.warmup:
            synchronize()
            start = time.perf_counter()
        batch = normalize_batch(dict(batch))
        autocast = torch.autocast(device.type, dtype=half) if half else contextlib.nullcontext()
        with autocast:
            logits = module.net(batch["image"])
        loss = module.loss(logits.float(), batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def table(result: dict) -> str:
    """The figures as the markdown table docs/benchmarks.md takes."""
    lines = ["| size | channels_last off | channels_last on | on / off |", "|---|---|---|---|"]
    for row in result["rows"]:
        off, on = row["off"], row["on"]
        ratios = [b / a for a, b in zip(off, on)]
        lines.append(f"| {row['size']} px | {spread(off)} | {spread(on)} | {spread(ratios, 2)} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"date": now(), "machine": machine(), "device": name, "torch": torch.__version__}
    result |= {"precision": args.precision, "batch_size": args.batch, "rows": []}
    for size in args.sizes:
        cfg, drawn = batches(args, size, device)
        row = {"size": size, "off": [], "on": []}
        for pair in range(1, args.pairs + 1):
            for variant in ("off", "on"):
                row[variant].append(samples_per_s(cfg, drawn, variant == "on", args))
                progress = f"channels_last {variant}: {row[variant][-1]:.1f} samples/s"
                print(f"{size} px, pair {pair}, {progress}", file=sys.stderr, flush=True)
        result["rows"].append(row)
    device_line = f"device: {name}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    steps = f"{args.steps} steps after {args.warmup}, {args.pairs} pairs"
    model = f"U-Net/ResNet34, batch {args.batch}, {args.precision}; samples/s over {steps}"
    show(result["date"], result["machine"], [device_line, model], table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--device", default="cpu", help="cpu | cuda")
    options.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | 16-mixed")
    options.add_argument("--pairs", type=int, default=3)
    options.add_argument("--steps", type=int, default=3, help="timed steps per timing")
    options.add_argument("--warmup", type=int, default=1, help="untimed steps per timing")
    options.add_argument("--json", help="also write the figures to this JSON file")
    return exit_status(run, options.parse_args())


if __name__ == "__main__":
    sys.exit(main())
