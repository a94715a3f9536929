"""The CSV logger of a run that resumes (W&B's logger: brainseg.tracking)."""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it instead,
    once the rows of the epochs it trains again (one interrupted midway) are dropped."""

    _first = True

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if "epoch" in metrics_dict:  # from 1, logged as a float (brainseg.training.module)
            metrics_dict = {**metrics_dict, "epoch": int(metrics_dict["epoch"])}
        if self._first and "epoch" in metrics_dict and os.path.isfile(self.metrics_file_path):
            epoch = metrics_dict["epoch"]
            with open(self.metrics_file_path, newline="") as file:
                rows = [r for r in csv.DictReader(file) if float(r.get("epoch") or 0) < epoch]
            with open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        self._first = False
        super().log_metrics(metrics_dict, step)

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv keeps the rows of earlier sessions of a resumed run."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and rank_zero_only.rank == 0:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment
