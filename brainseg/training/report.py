"""The run's own record: its files, its progress line, the content of metrics.json and the
provenance predict.py needs inside every checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Timer

from brainseg.checkpoint import Provenance
from brainseg.errors import ConfigError
from brainseg.evaluation.folds import INNER_VAL, SELECTION_RULES, check_selection, inner_validation
from brainseg.metrics import METRICS
from brainseg.metrics.monitor import higher_is_better, improves
from brainseg.paths import atomic_writer
from brainseg.reporting.figures import training_curves
from brainseg.reporting.scores import summarize
from brainseg.runfiles import (
    CONFIG_FILE,
    VAL_DSC,
    VAL_DSC_MEDIAN,
    EpochScores,
    RunMetrics,
    Selected,
    TestScores,
)
from brainseg.training.checkpoints import LastCheckpoint, epoch_cut

log = logging.getLogger("brainseg")


def _seconds_left(trainer: L.Trainer, entry: EpochScores, epoch_seconds: float) -> float | None:
    """Until the first limit that stops the fit: trainer.max_epochs, max_steps or max_time."""
    left = []
    if trainer.max_epochs and trainer.max_epochs > 0:
        left.append(epoch_seconds * (trainer.max_epochs - entry.epoch))
    if trainer.max_steps and trainer.max_steps > 0 and entry.step > 0:
        steps_per_epoch = entry.step / entry.epoch
        left.append(epoch_seconds * (trainer.max_steps - entry.step) / steps_per_epoch)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() is not None:
        left.append(timer.time_remaining())
    return max(min(left), 0.0) if left else None


def _scalars(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """The logged scalars of a stage (`val/`, `test/`) by their logged names."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and value.numel() == 1
    }


class RunReport(L.Callback):
    """Writes `config.yaml`, `split.json` and `curves.png` and builds `metrics.json`. `best`, the
    epoch best by `monitor` in its direction, is the run's one best-so-far record: the progress
    line, metrics.json and the trackers (TrackerMedia) read it. `progress_lines`: a line per epoch
    (where no progress bar shows)."""

    def __init__(
        self,
        output_dir: str | Path,
        config: dict[str, Any],
        monitor: str,
        progress_lines: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.monitor = monitor
        self.higher = higher_is_better(monitor)  # or a ConfigError: not a logged validation metric
        self.progress_lines = progress_lines
        self._epoch_started = time.monotonic()
        self._epoch_seconds: list[float] = []
        self._train_loss: list[torch.Tensor] = []
        self.selection = check_selection((config.get("evaluation") or {}).get("selection", "last"))
        self.best: EpochScores | None = None
        self.last: EpochScores | None = None
        self.history: list[EpochScores] = []
        self.test: TestScores | None = None
        self.final: dict[str, Any] = {}  # the Selected fields adopt_final_validation sets
        self._started = time.monotonic()
        self._elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and stage == "fit":
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with atomic_writer(self.output_dir / CONFIG_FILE) as fh:
                yaml.safe_dump(self.config, fh, sort_keys=False)
            trainer.datamodule.write_split(self.output_dir)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()
        self._train_loss = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, *args: Any) -> None:
        """A nan or inf training loss stops the run at once: the weights it leaves are not saved,
        so last.ckpt keeps the last finite epoch and no such epoch becomes the best."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if not math.isfinite(float(loss)):
            raise ConfigError(
                f"train loss is {float(loss)} at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}: training stopped, weights unsaved (lower optimizer.lr?)"
            )
        self._train_loss.append(loss.detach())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run that hook before the module logs the metric.
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or math.isnan(float(value)):
            return
        if epoch_cut(trainer):
            done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            log.info(
                f"epoch {trainer.current_epoch + 1} stopped after {done} of "
                f"{trainer.num_training_batches} batches: not reported, nor checkpointed"
            )
            return
        entry = EpochScores(
            epoch=trainer.current_epoch + 1,
            step=trainer.global_step,
            values=_scalars(trainer, "val/"),
            train_loss=float(torch.stack(self._train_loss).mean()) if self._train_loss else None,
        )
        self.history.append(entry)
        self.last = dataclasses.replace(
            entry,
            per_patient=dict(pl_module.volume_scores.get("val", {})),
            per_patient_metrics=dict(pl_module.volume_details.get("val", {})),
        )
        if improves(float(value), self.best and self.best.value(self.monitor), self.higher):
            self.best = self.last
        if trainer.is_global_zero:
            self._epoch_seconds.append(time.monotonic() - self._epoch_started)
            if self.progress_lines:
                log.info(self._progress_line(trainer, entry))
            training_curves(self.history, self.best, self.output_dir / "curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_patient = dict(pl_module.volume_scores.get("test", {}))
        if not per_patient:
            return
        self.test = TestScores(
            rule=INNER_VAL if inner_validation(self.config) else "best_on_val",
            epoch=self.best.epoch if self.best else None,
            values=_scalars(trainer, "test/"),
            per_patient=per_patient,
            per_patient_metrics=dict(pl_module.volume_details.get("test", {})),
            checkpoint=trainer.ckpt_path,
        )

    def _progress_line(self, trainer: L.Trainer, entry: EpochScores) -> str:
        """`epoch 3/20 | train loss 0.41 | val Dice (training grid) mean 0.61 median 0.65 |
        best_on_val/dsc_volume 0.61 (epoch 3) | 47 s | ETA 13 min`"""
        seconds = sum(self._epoch_seconds) / len(self._epoch_seconds)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        left = _seconds_left(trainer, entry, seconds)
        eta = "no limit" if left is None else f"ETA {left / 60:.1f} min"
        loss = f"{entry.train_loss:.4f}" if entry.train_loss is not None else "–"
        median = entry.dsc_volume_median
        return (
            f"epoch {entry.epoch}/{epochs or '∞'} | train loss {loss} | val Dice (training grid) "
            f"mean {entry.dsc_volume_mean:.4f} median {'–' if median is None else f'{median:.4f}'}"
            f" | best_on_val/{self.monitor.removeprefix('val/')} "
            f"{self.best.value(self.monitor):.4f} (epoch {self.best.epoch}) | "
            f"{seconds:.1f} s/epoch | {eta}"
        )

    def checkpoint_paths(self, trainer: L.Trainer) -> dict[str, str | None]:
        """The run's best and last checkpoint files (None where there is none)."""
        last = [c.path for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)]
        return {
            "best": getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
            "last": next((str(path) for path in last if path.is_file()), None),
        }

    def adopt_final_validation(self, final: dict[str, Any] | None) -> None:
        """Report the final validation (training.final_validation: original geometry, the decided
        post-processing; None: it had no patients) instead of the reported epoch's training-grid
        figures, which are kept under `training_grid`."""
        epoch = self.last if self.selection == "last" else self.best
        if epoch is None or final is None:
            return
        per_patient = final["per_patient"]
        dice = summarize([m["dsc"] for m in per_patient.values()])
        values = {**epoch.values, VAL_DSC: dice["mean"], VAL_DSC_MEDIAN: dice["median"]}
        for k in METRICS[1:]:  # the Dice above; loss and slice metrics stay the training grid's
            values[f"val/{k}"] = float(np.mean([m[k] for m in per_patient.values()]))
        self.final = {
            "scores": dataclasses.replace(
                epoch,
                values=values,
                per_patient={name: m["dsc"] for name, m in per_patient.items()},
                per_patient_metrics=per_patient,
            ),
            "geometry": "original (every slice, as predict.py)",
            "postprocessing": final["postprocessing"],
            "postprocessing_file": final["decision"],
        }

    def run_metrics(self, trainer: L.Trainer) -> RunMetrics:
        """The content of metrics.json (the epochs so far, also after a failed fit)."""
        paths = self.checkpoint_paths(trainer)
        reported = self.last if self.selection == "last" else self.best
        selected = reported and Selected(
            **{"scores": reported, **self.final},
            rule=self.selection,
            description=SELECTION_RULES[self.selection],
            checkpoint=paths["last" if self.selection == "last" else "best"],
            training_grid=reported if self.final else None,
        )
        return RunMetrics(
            monitor=self.monitor,
            higher_is_better=self.higher,
            selection=self.selection,
            selected=selected,
            best=self.best,
            best_checkpoint=paths["best"],
            last_checkpoint=paths["last"],
            # whole epochs; a recorded one also where the fit stopped before Lightning counted it
            epochs=max(trainer.current_epoch - epoch_cut(trainer), getattr(self.last, "epoch", 0)),
            train_seconds=round(self._elapsed_before + time.monotonic() - self._started, 1),
            history=self.history,
            test=self.test,
        )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        Provenance(config=self.config, **trainer.datamodule.provenance()).store(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best and dataclasses.asdict(self.best),
            "last": self.last and dataclasses.asdict(self.last),
            "history": [dataclasses.asdict(entry) for entry in self.history],
            "train_seconds": self._elapsed_before + time.monotonic() - self._started,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best, last = state_dict["best"], state_dict["last"]
        self.best = best and EpochScores(**best)
        self.last = last and EpochScores(**last)
        self.history = [EpochScores(**entry) for entry in state_dict["history"]]
        self._elapsed_before = float(state_dict["train_seconds"])
