"""What the benchmarks share: the DataModule as train.py composes it, their options, and what
docs/benchmarks.md asks beside a figure (date, machine, load average, min / median / max)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from brainseg.config import instantiate_setting

CONF = Path(__file__).resolve().parents[1] / "conf"


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: data root, a cache kept between runs, sizes, batch."""
    options = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    options.add_argument("--root", required=True, help="data root in the kaggle_3m layout")
    options.add_argument(
        "--cache-dir", default=os.path.join(tempfile.gettempdir(), "brainseg-bench-cache")
    )
    options.add_argument("--set", nargs="+", default=[], help="more overrides: data.split.n_val=1")
    options.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    options.add_argument("--batch", type=int, default=16)
    return options


def datamodule(args: argparse.Namespace, *overrides: str) -> tuple[DictConfig, object]:
    """The training config and its DataModule, set up (the first call of a size fills the cache)."""
    paths = [f"data.root={args.root}", f"data.cache_dir={args.cache_dir}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, *paths, *args.set])
    OmegaConf.resolve(cfg.data)
    dm = instantiate_setting("data", cfg.data)
    dm.setup("fit")
    return cfg, dm


def machine() -> str:
    """CPU model, cores, memory and the load average now (1, 5, 15 minutes)."""
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), model)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; load average {load}"


def show(started: str, load: str, details: list[str], table: str) -> None:
    """Print the block: date and machine at the start, what ran, the command, the table, and the
    load average at the end (a figure counts only if the machine stayed quiet)."""
    command = f"python -m {Path(sys.argv[0]).parent.name}.{Path(sys.argv[0]).stem}"
    print(f"date: {started}\nmachine: {load} (at the start)", *details, sep="\n")
    print(f"command: {command} {' '.join(sys.argv[1:])}".rstrip() + f"\n\n{table}\n")
    print(f"machine at the end: {machine()}")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def spread(values: list[float], digits: int = 1) -> str:
    """`min / median / max` of repeated runs."""
    figures = (min(values), statistics.median(values), max(values))
    return " / ".join(f"{v:.{digits}f}" for v in figures)
