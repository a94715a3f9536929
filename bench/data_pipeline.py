"""Data-pipeline benchmark: the training loader's samples/s and data wait per batch at 128 and
256 px with 0, 2 and 4 DataLoader workers.

    python -m bench.data_pipeline --root ../shared/data/lgg

Each run iterates the training loader (the DataModule composed from conf/) for `--batches` batches
after `--warmup` untimed ones; the data wait per batch is what `next()` and the z-score take. Each
run goes through every row, so a change in the machine's load spreads over all. Prints min / median
/ max over `--runs` runs, as docs/benchmarks.md takes them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from bench.common import datamodule, machine, now, parser, show, spread
from brainseg.cli import exit_status


def run_once(args: argparse.Namespace, size: int, workers: int) -> tuple[float, float]:
    """samples/s and data wait per batch (ms) of one run."""
    sizes = [f"data.preprocess.image_size={size}", f"data.batch_size={args.batch}"]
    _, dm = datamodule(args, *sizes, f"data.num_workers={workers}")
    loader = dm.train_dataloader()
    batches = (batch for _ in itertools.count() for batch in loader)  # epoch after epoch
    for _ in range(args.warmup):
        dm.on_after_batch_transfer(next(batches), 0)
    start = time.perf_counter()
    for _ in range(args.batches):
        dm.on_after_batch_transfer(next(batches), 0)
    seconds = time.perf_counter() - start
    del batches, loader  # the workers stop before the next run starts its own
    return args.batches * args.batch / seconds, 1000 * seconds / args.batches


def run(args: argparse.Namespace) -> None:
    started, load = now(), machine()
    rows = [(size, workers) for size in args.sizes for workers in args.workers]
    figures: dict[tuple[int, int], list[tuple[float, float]]] = {row: [] for row in rows}
    for number in range(1, args.runs + 1):
        for size, workers in rows:
            figures[size, workers].append(run_once(args, size, workers))
            rate, wait = figures[size, workers][-1]
            progress = f"{size} px, {workers} workers: {rate:.0f} samples/s, {wait:.1f} ms"
            print(f"run {number}: {progress}", file=sys.stderr, flush=True)
    _, dm = datamodule(args, f"data.preprocess.image_size={args.sizes[0]}")
    data = f"{len(dm.split.train)} training patients, {len(dm.datasets['train'])} slices"
    setup = f"reference augmentation, batch {args.batch}, {args.batches} timed batches"
    runs = f"after {args.warmup} per run, {args.runs} runs"
    table = ["| size | workers | samples/s | data wait per batch (ms) |", "|---|---|---|---|"]
    for size, workers in rows:
        rates, waits = zip(*figures[size, workers])
        table.append(f"| {size} px | {workers} | {spread(rates, 0)} | {spread(waits)} |")
    show(started, load, [f"data: {args.root}: {data}; {setup} {runs}"], "\n".join(table))


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    options.add_argument("--runs", type=int, default=3)
    options.add_argument("--batches", type=int, default=12, help="timed batches per run")
    options.add_argument("--warmup", type=int, default=2, help="untimed batches per run")
    return exit_status(run, options.parse_args())


if __name__ == "__main__":
    sys.exit(main())
