"""Experiment-tracking loggers that need more than a plain Hydra `_target_`."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from brainseg.tracking import wandb_credentials


def wandb_logger(
    project: str = "brainseg",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    save_dir: str = ".",
    offline: bool | str = "auto",
    tags: Sequence[str] = (),
    job_type: str = "train",
) -> WandbLogger:
    """A W&B run per job. `offline: auto` logs offline when no credentials are found (sync later
    with `wandb sync <save_dir>/wandb/offline-run-*`), so it never blocks asking for a key.

    The run id is derived from the job's output directory: a job that SLURM requeues into the same
    directory resumes the same W&B run. The mode is passed to `wandb.init` itself: Lightning's
    offline switch only sets WANDB_MODE, which W&B ignores once its settings exist in the process
    (an earlier run of a sweep, or the sweep report's run).
    """
    if offline == "auto":
        offline = not wandb_credentials()
    os.environ.setdefault("WANDB_SILENT", "true")
    run_id = hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    logger = WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=name,
        save_dir=save_dir,
        offline=bool(offline),
        id=run_id,
        resume="allow",
        tags=list(tags),
        job_type=job_type,
        mode="offline" if offline else "online",
    )
    # Lightning always passes `anonymous` (None by default) to wandb.init, which then warns once
    # per run that the setting is deprecated.
    logger._wandb_init.pop("anonymous", None)
    return logger


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv;
    a resumed run appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv keeps the rows of earlier sessions of a resumed run."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._is_rank_zero():
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment

    @staticmethod
    def _is_rank_zero() -> bool:
        from lightning.pytorch.utilities import rank_zero_only

        return rank_zero_only.rank == 0
