"""Checkpoints that make a resume lose at most the epoch in progress (docs/safety.md): written
atomically, read safely, removed only inside the run's own folder. `last.ckpt` has its own callback:
Lightning's `save_last` writes it only when a top-k file was saved (with `save_top_k: 1`, a copy of
the best); SLURM's preemption signal saves it at the next batch boundary."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from brainseg.checkpoint import load_safely, prediction_only, read_checkpoint, save_atomically
from brainseg.errors import ConfigError
from brainseg.metrics.monitor import mode as direction

log = logging.getLogger("brainseg")
LAST_NAME = "last"
# The signal submitit asks SLURM to send before the time limit (sbatch --signal), and its override.
PREEMPT_SIGNUM = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")  # and best_k_models


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes goes through a temporary file and a rename; every one it
    reads is loaded safely (tensors and plain values only)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        save_atomically(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_safely(path, map_location=map_location or "cpu")


def epoch_cut(trainer: L.Trainer) -> bool:
    """Whether the fit stopped (max_steps, max_time) before the epoch's last batch: the weights
    and validation figures of such an epoch are no epoch's, so they are neither checkpointed nor
    reported, and the last whole epoch is."""
    loop = trainer.fit_loop.epoch_loop
    return loop.done and 0 < loop.batch_progress.current.ready < trainer.num_training_batches


class _OwnFilesOnly(ModelCheckpoint):
    """Tracks and removes checkpoint files of this run only: the paths of a resumed state (data
    from a file) are re-based onto `dirpath` and kept only if they name a `*.ckpt` file there.
    Lightning's removal deletes recursively anything whose path merely starts with `dirpath`."""

    def _own_file(self, path: str | Path) -> bool:
        path = Path(path)
        return (
            path.suffix == self.FILE_EXTENSION
            and path.is_file()
            and not path.is_symlink()
            and path.resolve().parent == Path(self.dirpath).resolve()
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        models = state_dict.get("best_k_models")
        models = {str(p): v for p, v in (models if isinstance(models, dict) else {}).items()}
        models = {p: score for p, score in models.items() if isinstance(score, torch.Tensor)}
        recorded = {str(state_dict.get(key) or "") for key in PATH_KEYS} - {""} | set(models)
        rebased = {p: str(Path(self.dirpath) / Path(p).name) for p in recorded}
        kept = {p: new for p, new in rebased.items() if self._own_file(new)}
        if forgotten := sorted(recorded - set(kept)):
            log.warning(
                "%s: resumed state names %s, not checkpoint files of this run; forgotten",
                self.dirpath,
                forgotten,
            )
        super().load_state_dict(
            {
                **state_dict,
                "dirpath": self.dirpath,
                **{key: kept.get(str(state_dict.get(key)), "") for key in PATH_KEYS},
                "best_k_models": {kept[p]: v for p, v in models.items() if p in kept},
            }
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not epoch_cut(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not epoch_cut(trainer):
            super().on_validation_end(trainer, pl_module)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero and self._own_file(filepath):
            Path(filepath).unlink()


class BestCheckpoint(_OwnFilesOnly):
    """Top-k checkpoints by `monitor` in its direction (`mode` follows it), holding weights and
    provenance only; the epoch in their names is numbered from 1, as in metrics.json."""

    def __init__(
        self, monitor: str, filename: str | None = None, mode: str | None = None, **kwargs: Any
    ) -> None:
        if kwargs.get("save_last"):
            raise ValueError("BestCheckpoint does not write last.ckpt; LastCheckpoint does")
        try:
            natural = direction(monitor)
        except ConfigError:
            if mode is None:  # a key outside the logged metrics needs its mode spelled out
                raise
            natural = mode
        if mode not in (None, natural):
            raise ConfigError(
                f"callbacks.model_checkpoint.mode={mode} contradicts monitor={monitor} "
                f"(best is {natural}); leave the mode out, it follows the monitor"
            )
        if filename is None:
            filename = f"best-epoch{{epoch:03d}}-{monitor.split('/')[-1]}_{{{monitor}:.4f}}"
        super().__init__(
            monitor=monitor,
            filename=filename,
            mode=natural,
            auto_insert_metric_name=False,
            **kwargs,
        )
        self._saving = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Best files the resumed state does not track were written after the resumed epoch,
        which is trained again: removed, so that no stale best file stands beside the new one."""
        super().load_state_dict(state_dict)
        prefix = (self.filename or "").split("{")[0]
        tracked = {Path(p).resolve() for p in self.best_k_models}
        for path in Path(self.dirpath).glob(f"{prefix}*{self.FILE_EXTENSION}") if prefix else []:
            if self._own_file(path) and path.resolve() not in tracked:
                log.info("%s: written after the resumed epoch; removed", path)
                path.unlink()

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, **kwargs: Any
    ) -> str:
        if "epoch" in metrics:  # as the module logs it, from 1, a float
            metrics = {**metrics, "epoch": int(metrics["epoch"])}
        return super().format_checkpoint_name(metrics, filename, **kwargs)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._saving = True  # a full dump (only those hold the provenance), slimmed below
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self._saving = False

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._saving:  # this callback's own dump, before its one write
            kept = prediction_only(checkpoint)
            checkpoint.clear()
            checkpoint.update(kept)


class LastCheckpoint(_OwnFilesOnly):
    """`<dirpath>/last.ckpt` with the full training state, after every epoch and on the
    preemption signal; with `keep_training_state=False`, slimmed once the job has succeeded."""

    def __init__(
        self, dirpath: str, every_n_epochs: int = 1, keep_training_state: bool = True
    ) -> None:
        super().__init__(
            dirpath, LAST_NAME, every_n_epochs=every_n_epochs, enable_version_counter=False
        )
        self.keep_training_state = keep_training_state
        self._signalled: int | None = None
        self._previous_handler: Any = None

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{LAST_NAME}{self.FILE_EXTENSION}"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and PREEMPT_SIGNUM is not None and self._previous_handler is None:
            self._previous_handler = signal.signal(PREEMPT_SIGNUM, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous_handler is not None:
            signal.signal(PREEMPT_SIGNUM, self._previous_handler)
            self._previous_handler = None

    def job_succeeded(self) -> None:
        """Called once the job has ended successfully (rank 0)."""
        if not self.keep_training_state and self.path.is_file():
            save_atomically(prediction_only(read_checkpoint(self.path)), self.path)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: saving inside the handler could catch an optimizer step midway.
        self._signalled = signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_batch_end(trainer, *args)
        self._save_if_signalled(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_if_signalled(trainer)

    def _save_if_signalled(self, trainer: L.Trainer) -> None:
        if self._signalled is None:
            return
        signum, self._signalled = self._signalled, None
        self._save_checkpoint(trainer, str(self.path))
        log.warning(
            "signal %s: saved %s at epoch %d, step %d",
            signal.Signals(signum).name,
            self.path,
            trainer.current_epoch,
            trainer.global_step,
        )
        previous = self._previous_handler
        if callable(previous):  # submitit's handler: requeue the job and exit
            previous(signum, None)
