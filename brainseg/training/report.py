"""Run artifacts: resolved config and split at the start, best per-volume Dice at the end,
and the provenance predict.py needs inside every checkpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from brainseg.checkpoint import Provenance
from brainseg.data.contract import SegmentationData
from brainseg.reporting.scores import summarize


class RunReport(L.Callback):
    """Writes `config.yaml`, `split.json` and `metrics.json` into the run directory; the best epoch
    is the one with the highest `monitor` (the config's `monitor` key)."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], monitor: str) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.monitor = monitor
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run that hook before the module logs the metric.
        if trainer.sanity_checking:
            return
        scores = pl_module.volume_scores.get("val", {})
        mean = trainer.callback_metrics.get(self.monitor)
        median = trainer.callback_metrics.get(f"{self.monitor}_median")
        if mean is None or math.isnan(float(mean)):
            return
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                 "dsc_volume_mean": float(mean), "dsc_volume_median": None if median is None else float(median)}
        self.history.append(entry)
        if self.best is None or entry["dsc_volume_mean"] > self.best["dsc_volume_mean"]:
            self.best = {**entry, "per_patient": dict(scores)}

    def write_metrics(self, trainer: L.Trainer, test_scores: dict[str, float] | None = None) -> dict[str, Any]:
        checkpoint = trainer.checkpoint_callback
        metrics = {
            "monitor": self.monitor,
            "best": self.best,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
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
