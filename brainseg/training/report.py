"""Run artifacts: resolved config and split at the start, a progress line and curves.png after
each validation, best per-volume Dice and the reported validation figures (from the final
validation, training.final_validation) at the end, and the provenance predict.py needs inside every
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
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Timer

from brainseg.checkpoint import Provenance
from brainseg.data.contract import SegmentationData
from brainseg.evaluation.folds import INNER_VAL, SELECTION_RULES, check_selection, inner_validation
from brainseg.reporting.figures import training_curves
from brainseg.reporting.scores import summarize
from brainseg.training.checkpoints import LastCheckpoint
from brainseg.training.module import SURFACE_AND_DETECTION

log = logging.getLogger("brainseg")


def _seconds_left(trainer: L.Trainer, entry: dict[str, Any], epoch_seconds: float) -> float | None:
    """Until the first limit that stops the fit: trainer.max_epochs, max_steps or max_time."""
    left = []
    if trainer.max_epochs and trainer.max_epochs > 0:
        left.append(epoch_seconds * (trainer.max_epochs - entry["epoch"] - 1))
    if trainer.max_steps and trainer.max_steps > 0 and entry["step"] > 0:
        steps_per_epoch = entry["step"] / (entry["epoch"] + 1)
        left.append(epoch_seconds * (trainer.max_steps - entry["step"]) / steps_per_epoch)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() is not None:
        left.append(timer.time_remaining())
    return max(min(left), 0.0) if left else None


class RunReport(L.Callback):
    """Writes `config.yaml`, `split.json`, `curves.png` and `metrics.json` into the run directory;
    the best epoch is the one with the highest `monitor` (the config's `monitor` key).

    With `progress_lines` (default: when stdout is not a terminal, e.g. a redirected run or a SLURM
    `.out` file, where no progress bar shows), logs one line per validated epoch.
    """

    def __init__(
        self,
        output_dir: str | Path,
        config: dict[str, Any],
        monitor: str,
        progress_lines: bool | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.monitor = monitor
        self.progress_lines = not sys.stdout.isatty() if progress_lines is None else progress_lines
        self._epoch_started = time.monotonic()
        self._epoch_seconds: list[float] = []
        self._train_loss: list[torch.Tensor] = []
        self.selection = check_selection((config.get("evaluation") or {}).get("selection", "last"))
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None  # see adopt_final_validation
        self.history: list[dict[str, Any]] = []
        self.test: dict[str, Any] | None = None
        self._started = time.monotonic()
        self._elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and stage == "fit":
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(
                yaml.safe_dump(self.config, sort_keys=False)
            )
            data: SegmentationData = trainer.datamodule
            data.write_split(self.output_dir / "split.json")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()
        self._train_loss = []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
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
        details = pl_module.volume_details.get("val", {})
        val_loss = trainer.callback_metrics.get("val/loss")
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "dsc_volume_mean": float(mean),
            "dsc_volume_median": None if median is None else float(median),
            "train_loss": float(torch.stack(self._train_loss).mean()) if self._train_loss else None,
            "val_loss": float(val_loss) if val_loss is not None else None,
            **{
                k: float(trainer.callback_metrics[f"val/{k}"])
                for k in SURFACE_AND_DETECTION
                if f"val/{k}" in trainer.callback_metrics
            },
        }
        self.history.append(entry)
        self.last = {**entry, "per_patient": dict(scores), "per_patient_metrics": dict(details)}
        if self.best is None or entry["dsc_volume_mean"] > self.best["dsc_volume_mean"]:
            self.best = self.last
        if trainer.is_global_zero:
            self._epoch_seconds.append(time.monotonic() - self._epoch_started)
            if self.progress_lines:
                log.info(self._progress_line(trainer, entry))
            training_curves(self.history, self.output_dir / "curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test = {
            "checkpoint": trainer.ckpt_path,
            "per_patient": dict(pl_module.volume_scores.get("test", {})),
            "per_patient_metrics": dict(pl_module.volume_details.get("test", {})),
        }

    def _progress_line(self, trainer: L.Trainer, entry: dict[str, Any]) -> str:
        """`epoch 3/20 | train loss 0.41 | val Dice mean 0.61 median 0.65 | best 0.61
        (epoch 3) | 47 s | ETA 13 min`"""
        seconds = sum(self._epoch_seconds) / len(self._epoch_seconds)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        left = _seconds_left(trainer, entry, seconds)
        eta = "no limit" if left is None else f"ETA {left / 60:.1f} min"
        loss = f"{entry['train_loss']:.4f}" if entry["train_loss"] is not None else "–"
        median = (
            f"{entry['dsc_volume_median']:.4f}" if entry["dsc_volume_median"] is not None else "–"
        )
        return (
            f"epoch {entry['epoch'] + 1}/{epochs or '∞'} | train loss {loss} | val Dice mean "
            f"{entry['dsc_volume_mean']:.4f} median {median} | best "
            f"{self.best['dsc_volume_mean']:.4f} (epoch {self.best['epoch'] + 1}) | "
            f"{seconds:.1f} s/epoch | {eta}"
        )

    def checkpoint_paths(self, trainer: L.Trainer) -> dict[str, str | None]:
        """The run's best and last checkpoint files (None where there is none)."""
        checkpoint = trainer.checkpoint_callback
        return {
            "best": getattr(checkpoint, "best_model_path", None) or None,
            "last": next(
                (
                    str(c.path)
                    for c in trainer.checkpoint_callbacks
                    if isinstance(c, LastCheckpoint) and c.path.is_file()
                ),
                None,
            ),
        }

    def selected_checkpoint(self, trainer: L.Trainer) -> str | None:
        """The checkpoint of the epoch the selection rule reports."""
        return self.checkpoint_paths(trainer)["last" if self.selection == "last" else "best"]

    def adopt_final_validation(self, final: dict[str, Any]) -> None:
        """Report the final validation (training.final_validation: original geometry, the decided
        post-processing) instead of the selected epoch's training-grid figures, which are kept
        under `training_grid`."""
        epoch = self._reported()
        if epoch is None or not final["per_patient"]:
            return
        per_patient = final["per_patient"]
        dice = summarize([m["dsc"] for m in per_patient.values()])
        self.final = {
            **{k: epoch[k] for k in ("epoch", "step", "train_loss", "val_loss")},
            "dsc_volume_mean": dice["mean"],
            "dsc_volume_median": dice["median"],
            **{
                k: float(np.mean([m[k] for m in per_patient.values()]))
                for k in SURFACE_AND_DETECTION
            },
            "per_patient": {name: m["dsc"] for name, m in per_patient.items()},
            "per_patient_metrics": per_patient,
            "geometry": "original (every slice, as predict.py)",
            "postprocessing": final["postprocessing"],
            "postprocessing_file": final["decision"],
            "training_grid": {
                k: epoch[k]
                for k in ("dsc_volume_mean", "dsc_volume_median", "per_patient")
                if k in epoch
            },
        }

    def write_metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        paths = self.checkpoint_paths(trainer)
        selected = self._reported()
        metrics = {
            "monitor": self.monitor,
            "selection": self.selection,
            "selected": selected
            and {
                **selected,
                "rule": self.selection,
                "description": SELECTION_RULES[self.selection],
                "checkpoint": self.selected_checkpoint(trainer),
            },
            "best": self.best,
            "best_checkpoint": paths["best"],
            "last_checkpoint": paths["last"],
            "epochs": trainer.current_epoch,
            "train_seconds": round(self._elapsed_before + time.monotonic() - self._started, 1),
            "history": self.history,
        }
        if self.test and self.test["per_patient"]:
            stats = summarize(list(self.test["per_patient"].values()))
            metrics["test"] = {
                "rule": INNER_VAL if inner_validation(self.config) else "best_on_val",
                "epoch": self.best["epoch"] if self.best else None,
                "dsc_volume_mean": stats["mean"],
                "dsc_volume_median": stats["median"],
                **self.test,
            }
        (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    def _reported(self) -> dict[str, Any] | None:
        """The validation entry the selection rule reports: the final validation once made."""
        if self.final is not None:
            return self.final
        return self.last if self.selection == "last" else self.best

    def summary_values(self) -> dict[str, Any]:
        """Flat run-summary values for experiment trackers: the reported (selection rule) epoch's
        patient means and the best epoch's Dice, labelled as selected on validation."""
        selected = self._reported()
        if not selected:
            return {}
        keys = ["epoch", "dsc_volume_mean", "dsc_volume_median", *SURFACE_AND_DETECTION]
        values: dict[str, Any] = {f"reported/{k}": selected[k] for k in keys if k in selected}
        values["reported/selection"] = self.selection
        values["best_on_val/dsc_volume_mean"] = self.best["dsc_volume_mean"]
        return values

    def reported_table(self) -> tuple[list[str], list[list[Any]]] | None:
        """(columns, rows): every per-volume metric per patient at the reported epoch."""
        selected = self._reported()
        per_patient = (selected or {}).get("per_patient_metrics") or {}
        if not per_patient:
            return None
        columns = list(next(iter(per_patient.values())))
        return ["patient", *columns], [
            [name, *(values[c] for c in columns)] for name, values in per_patient.items()
        ]

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        data: SegmentationData = trainer.datamodule
        Provenance(config=self.config, **data.provenance()).store(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        elapsed = self._elapsed_before + time.monotonic() - self._started
        return {
            "best": self.best,
            "last": self.last,
            "history": self.history,
            "train_seconds": elapsed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.last = state_dict.get("last")
        self.history = list(state_dict.get("history", []))
        self._elapsed_before = float(state_dict.get("train_seconds", 0.0))
