"""Training-speed figures: samples/s, the share of step time spent waiting for data, device
utilisation and peak memory. Used by bench/train_speed.py and, as a callback, by real runs started
from the repository root (`+callbacks.speed._target_=bench.speed.TrainingSpeed`, as
`make gpu-check` does)."""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import lightning as L
import torch

log = logging.getLogger("brainseg")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock intervals belong to the right phase."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory (CUDA), else the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def utilisation(device: torch.device) -> str:
    """The GPU's utilisation in percent over the last sample period (needs nvidia-ml-py),
    or 'n/a'."""
    if device.type != "cuda":
        return "n/a"
    try:
        return f"{torch.cuda.utilization(device)}%"
    except Exception as exc:  # noqa: BLE001 - pynvml missing or refused: a figure, not a failure
        return f"n/a ({type(exc).__name__})"


class SpeedMeter:
    """Accumulates data-wait and total step time over steps; `data` then `step` per iteration."""

    def __init__(self) -> None:
        self.data_s = self.total_s = 0.0
        self.samples = self.steps = 0
        self._mark = time.perf_counter()

    def start(self) -> None:
        self._mark = time.perf_counter()

    def data(self) -> None:
        """The batch is on the device, ready for the forward pass."""
        now = time.perf_counter()
        self.data_s += now - self._mark
        self.total_s += now - self._mark
        self._mark = now

    def step(self, samples: int) -> None:
        """Forward, backward and optimizer step done."""
        now = time.perf_counter()
        self.total_s += now - self._mark
        self._mark = now
        self.samples += samples
        self.steps += 1

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.total_s if self.total_s else 0.0

    @property
    def data_fraction(self) -> float:
        return self.data_s / self.total_s if self.total_s else 0.0


class TrainingSpeed(L.Callback):
    """Logs samples/s, data-wait fraction, utilisation, peak memory and the epoch's wall time
    (training and the validation that ends it) at the end of each training epoch (first epoch
    included: it holds the warm-up). Synchronises the device at batch boundaries, which costs a
    little overlap: switch it on to measure, not by default."""

    def __init__(self) -> None:
        self.meter = SpeedMeter()
        self.epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter = SpeedMeter()
        self.epoch_start = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        synchronize(pl_module.device)
        self.meter.data()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        synchronize(pl_module.device)
        self.meter.step(int(batch["image"].shape[0]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        figures = {
            "speed/samples_per_s": self.meter.samples_per_s,
            "speed/data_wait": self.meter.data_fraction,
            "speed/peak_memory_mb": peak_memory_mb(device),
            "speed/epoch_s": time.perf_counter() - self.epoch_start,
        }
        pl_module.log_dict(figures)
        log.info(
            "epoch %d: %.1f s, %.1f samples/s, data wait %.1f%% of step time, "
            "utilisation %s, peak memory %.0f MB",
            trainer.current_epoch,
            figures["speed/epoch_s"],
            figures["speed/samples_per_s"],
            100 * figures["speed/data_wait"],
            utilisation(device),
            figures["speed/peak_memory_mb"],
        )
