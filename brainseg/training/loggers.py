"""The CSV logger of a run that resumes (W&B's logger: brainseg.tracking)."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


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
