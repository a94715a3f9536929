"""Run artifacts: resolved config and split at the start, a progress line and curves.png after
each validation, best per-volume Dice at the end, and the provenance predict.py needs inside every
checkpoint."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from brainseg.checkpoint import Provenance
from brainseg.data.contract import SegmentationData
from brainseg.reporting.figures import training_curves
from brainseg.reporting.scores import summarize
from brainseg.training.checkpoints import LastCheckpoint

log = logging.getLogger("brainseg")


class RunReport(L.Callback):
    """Writes `config.yaml`, `split.json`, `curves.png` and `metrics.json` into the run directory;
    the best epoch is the one with the highest `monitor` (the config's `monitor` key).

    With `progress_lines` (default: when stdout is not a terminal, e.g. a redirected run or a SLURM
    `.out` file, where no progress bar shows), logs one line per validated epoch.
    """

    def __init__(self, output_dir: str | Path, config: dict[str, Any], monitor: str,
                 progress_lines: bool | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.monitor = monitor
        self.progress_lines = not sys.stdout.isatty() if progress_lines is None else progress_lines
        self._epoch_started = time.monotonic()
        self._epoch_seconds: list[float] = []
        self._train_loss: list[torch.Tensor] = []
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and stage == "fit":
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
            data: SegmentationData = trainer.datamodule
            data.write_split(self.output_dir / "split.json")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()
        self._train_loss = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._train_loss.append(loss.detach())  # stays on the device: no sync per step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run that hook before the module logs the metric.
        if trainer.sanity_checking:
            return
        scores = pl_module.volume_scores.get("val", {})
        mean = trainer.callback_metrics.get(self.monitor)
        median = trainer.callback_metrics.get(f"{self.monitor}_median")
        if mean is None or math.isnan(float(mean)):
            return
        val_loss = trainer.callback_metrics.get("val/loss")
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                 "dsc_volume_mean": float(mean), "dsc_volume_median": None if median is None else float(median),
                 "train_loss": float(torch.stack(self._train_loss).mean()) if self._train_loss else None,
                 "val_loss": float(val_loss) if val_loss is not None else None}
        self.history.append(entry)
        if self.best is None or entry["dsc_volume_mean"] > self.best["dsc_volume_mean"]:
            self.best = {**entry, "per_patient": dict(scores)}
        if trainer.is_global_zero:
            self._epoch_seconds.append(time.monotonic() - self._epoch_started)
            if self.progress_lines:
                log.info(self._progress_line(trainer, entry))
            training_curves(self.history, self.output_dir / "curves.png")

    def _progress_line(self, trainer: L.Trainer, entry: dict[str, Any]) -> str:
        """`epoch 3/20 | train loss 0.41 | val Dice mean 0.61 median 0.65 | best 0.61 (epoch 3) | 47 s | ETA 13 min`"""
        seconds = sum(self._epoch_seconds) / len(self._epoch_seconds)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        eta = f"ETA {seconds * (epochs - entry['epoch'] - 1) / 60:.1f} min" if epochs else "no epoch limit"
        loss = f"{entry['train_loss']:.4f}" if entry["train_loss"] is not None else "–"
        median = f"{entry['dsc_volume_median']:.4f}" if entry["dsc_volume_median"] is not None else "–"
        return (f"epoch {entry['epoch'] + 1}/{epochs or '∞'} | train loss {loss} | val Dice mean "
                f"{entry['dsc_volume_mean']:.4f} median {median} | best "
                f"{self.best['dsc_volume_mean']:.4f} (epoch {self.best['epoch'] + 1}) | {seconds:.1f} s/epoch | {eta}")

    def write_metrics(self, trainer: L.Trainer, test_scores: dict[str, float] | None = None) -> dict[str, Any]:
        checkpoint = trainer.checkpoint_callback
        metrics = {
            "monitor": self.monitor,
            "best": self.best,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": next((str(c.path) for c in trainer.checkpoint_callbacks
                                     if isinstance(c, LastCheckpoint) and c.path.is_file()), None),
            "epochs": trainer.current_epoch,
            "train_seconds": round(self._elapsed_before + time.monotonic() - self._started, 1),
            "history": self.history,
        }
        if test_scores:
            stats = summarize(list(test_scores.values()))
            metrics["test"] = {"dsc_volume_mean": stats["mean"], "dsc_volume_median": stats["median"],
                               "per_patient": test_scores}
        (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        data: SegmentationData = trainer.datamodule
        Provenance(config=self.config, **data.provenance()).store(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        elapsed = self._elapsed_before + time.monotonic() - self._started
        return {"best": self.best, "history": self.history, "train_seconds": elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.history = list(state_dict.get("history", []))
        self._elapsed_before = float(state_dict.get("train_seconds", 0.0))
