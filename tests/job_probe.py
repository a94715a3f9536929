"""A Lightning callback for launcher tests: the job records, from inside its own process, the GPUs
it was given, when its process started and when its training ended."""

import json
import os
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig


def _process_start() -> float:
    """This process's start (Unix time), from /proc (Linux)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    stat = Path("/proc/stat").read_text().splitlines()
    boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class JobProbe(L.Callback):
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
            "start": _process_start(),
            "end": time.time(),
        }
        (Path(HydraConfig.get().runtime.output_dir) / "probe.json").write_text(json.dumps(record))
