"""Checkpoints that make a resume lose at most the epoch in progress.

- `last.ckpt` is written after every epoch (Lightning's `save_last` only writes it when a top-k
  checkpoint was saved, so with `save_top_k: 1` it is a copy of the best, not the last epoch);
- the best checkpoint keeps only what predict.py needs (weights and provenance), a third of the
  size, written once;
- every file is written under a temporary name and renamed (a crash mid-write leaves the old file);
- every file Lightning reads back (resume, `trainer.test(ckpt_path=...)`) is loaded with
  `weights_only=True`, as predict.py does: a checkpoint cannot run code;
- a run directory that was moved or copied keeps tracking its own files (no `last-v1.ckpt`), and
  only its own `*.ckpt` files are ever removed, whatever paths a resumed state names;
- on the signal SLURM/submitit sends before a time limit or preemption, `last.ckpt` is saved at the
  next batch boundary before submitit requeues the job.
"""

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
PREEMPT_SIGNAL = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
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
    """Tracks and removes checkpoint files of this run only.

    The paths in a resumed state are data from a file: each is re-based onto this run's
    `dirpath` (a run directory moved or copied keeps tracking its own files, no `last-v1.ckpt`)
    and kept only if it names a `*.ckpt` file there, else dropped. Removal unlinks only such a
    file (Lightning's removes recursively anything under a path that merely starts with
    `dirpath`, e.g. `checkpoints/..`)."""

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
        if recorded - set(kept):
            log.warning(
                "%s: resumed state names %s, not checkpoint files of this run; forgotten",
                self.dirpath,
                sorted(recorded - set(kept)),
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
    """Top-k checkpoints by the monitored metric in its direction (`mode` follows `monitor`: the
    lowest val/hd95, the highest val/dsc_volume), holding weights and provenance only.

    Named `best-epoch014-dsc_volume_0.9402.ckpt` by default, the epoch numbered from 1 as in
    metrics.json and the console."""

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
            name = monitor.split("/")[-1]
            filename = f"best-epoch{{epoch:03d}}-{name}_{{{monitor}:.4f}}"
        super().__init__(
            monitor=monitor,
            filename=filename,
            mode=natural,
            auto_insert_metric_name=False,
            **kwargs,
        )
        self._saving = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, best files of this run that the resumed state does not track were written
        by the interrupted session after the resumed epoch, which is trained again: removed, so
        that no stale best file stands beside the new one."""
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
        """Drops the training state from this callback's own dump before its one write."""
        if self._saving:
            kept = prediction_only(checkpoint)
            checkpoint.clear()
            checkpoint.update(kept)


class LastCheckpoint(_OwnFilesOnly):
    """`<dirpath>/last.ckpt` with the full training state,
    after every epoch and on the preemption signal.

    With `keep_training_state=False`, once the job has ended successfully the file keeps only the
    weights and provenance (predict.py and `evaluation.selection: last` still use it; resuming
    that run is no longer possible): a third of the size.
    """

    def __init__(
        self, dirpath: str, every_n_epochs: int = 1, keep_training_state: bool = True
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=LAST_NAME,
            monitor=None,
            save_top_k=1,
            every_n_epochs=every_n_epochs,
            enable_version_counter=False,
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
        signum = getattr(signal, PREEMPT_SIGNAL, None)
        if stage == "fit" and signum is not None and self._previous_handler is None:
            self._previous_handler = signal.signal(signum, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        signum = getattr(signal, PREEMPT_SIGNAL, None)
        if stage == "fit" and self._previous_handler is not None:
            signal.signal(signum, self._previous_handler)
            self._previous_handler = None

    def job_succeeded(self) -> None:
        """Called once the job has ended successfully (rank 0)."""
        if not self.keep_training_state and self.path.is_file():
            save_atomically(prediction_only(read_checkpoint(self.path)), self.path)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: saving inside the handler could catch the model in the middle of an optimizer
        # step.
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
