"""The files the stages of a run hand each other, each with one owner: its name, its fields and the
functions that write and read it, so that renaming a field is one edit here and a reader cannot ask
for a field the writer never writes (docs/tracking.md, docs/sweeps.md). Epochs are numbered from 1.
A file that is not a record of its shape is a DataError naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from brainseg.errors import DataError
from brainseg.paths import atomic_writer

CONFIG_FILE = "config.yaml"  # the run's resolved configuration (YAML)
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"
FAILURE_FILE = "failure.json"
PRUNED_FILE = "pruned.json"
SCORES_FILE = "dsc.csv"
SCORES_SUMMARY_FILE = "dsc_summary.json"

# dsc.csv columns around the metric columns (brainseg.metrics): who, which subset (where known),
# and the sizes behind the scores.
PATIENT_COLUMN = "patient"
SUBSET_COLUMN = "subset"
VOLUME_COLUMNS = ["lesion_voxels", "predicted_voxels", "slices"]

# The logged names of the per-volume Dice over patients (mean and median), validation and test.
VAL_DSC, VAL_DSC_MEDIAN = "val/dsc_volume", "val/dsc_volume_median"
TEST_DSC, TEST_DSC_MEDIAN = "test/dsc_volume", "test/dsc_volume_median"

_Content = TypeVar("_Content")


def write_json(path: Path, content: Any) -> Path:
    """A JSON file, written atomically (readers never see half of it); NaN and infinities are
    written as null, so that it stays valid JSON."""
    plain = json.loads(json.dumps(content), parse_constant=lambda _: None)
    with atomic_writer(path) as fh:
        fh.write(json.dumps(plain, indent=2, allow_nan=False))
    return path


def _record(kind: Any, value: Any) -> Any:
    """`value` read as `kind`: a record from its dict, nested records and lists of them too; a
    missing or unknown field is a TypeError."""
    if value is None:
        return None
    if get_origin(kind) is list:
        return [_record(get_args(kind)[0], item) for item in value]
    record = next((k for k in (kind, *get_args(kind)) if dataclasses.is_dataclass(k)), None)
    if record is None:
        return value
    fields = get_type_hints(record)
    return record(**{name: _record(fields.get(name), item) for name, item in value.items()})


def _read_json(path: Path, what: str, kind: type[_Content]) -> _Content | None:
    """The JSON run file as a `kind` record, None when it does not exist; a DataError naming the
    file when it is not such a record."""
    if not path.is_file():
        return None
    try:
        return _record(kind, json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"no field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise DataError(f"{path}: not a {what} file ({reason})") from None


@dataclass
class EpochScores:
    """One validated epoch: every logged validation scalar by its logged name (`values`), the
    train loss, and the per-patient Dice and per-patient metrics."""

    epoch: int  # from 1
    step: int
    values: dict[str, float]
    train_loss: float | None = None
    per_patient: dict[str, float] = field(default_factory=dict)
    per_patient_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def dsc_volume_mean(self) -> float:
        return self.values[VAL_DSC]

    @property
    def dsc_volume_median(self) -> float | None:
        return self.values.get(VAL_DSC_MEDIAN)

    def value(self, monitor: str) -> float | None:
        """The epoch's value of a logged validation metric (`val/hd95`)."""
        return self.values.get(monitor)

    def __post_init__(self) -> None:
        self.dsc_volume_mean  # noqa: B018 - a record without the Dice is not one


@dataclass
class Selected:
    """The epoch a selection rule reports, with the rule and the checkpoint holding that epoch.
    The fields after `checkpoint` are set when the scores come from the final validation after
    training (predicted as predict.py predicts, the decided post-processing applied)."""

    scores: EpochScores
    rule: str
    description: str = ""
    checkpoint: str | None = None
    geometry: str | None = None
    postprocessing: list[dict[str, Any]] | None = None
    postprocessing_file: str | None = None
    training_grid: EpochScores | None = None


@dataclass
class TestScores:
    """The test patients scored with the checkpoint best on validation (`test: true`, or the
    inner-validation rule, under which they are the fold's held-out patients): every logged test
    scalar by its logged name (`test/dsc_volume`, ...)."""

    __test__ = False  # not a test class

    rule: str
    epoch: int | None
    values: dict[str, float]
    per_patient: dict[str, float]
    per_patient_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    checkpoint: str | None = None

    @property
    def dsc_volume_mean(self) -> float:
        return self.values[TEST_DSC]

    @property
    def dsc_volume_median(self) -> float:
        return self.values[TEST_DSC_MEDIAN]

    def as_selected(self) -> Selected:
        """These scores in the place of a reported epoch's (the sweep report pools either)."""
        values = {VAL_DSC: self.dsc_volume_mean, VAL_DSC_MEDIAN: self.dsc_volume_median}
        scores = EpochScores(
            self.epoch or 0, 0, values, None, self.per_patient, self.per_patient_metrics
        )
        return Selected(scores, self.rule, checkpoint=self.checkpoint)

    def __post_init__(self) -> None:
        self.dsc_volume_mean, self.dsc_volume_median  # noqa: B018 - required


@dataclass
class RunMetrics:
    """Content of metrics.json: training writes it; the sweep report, out-of-fold prediction and
    train.py's return value read it."""

    monitor: str
    higher_is_better: bool
    selection: str
    selected: Selected | None  # None: no epoch was validated
    best: EpochScores | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    epochs: int
    train_seconds: float | None
    history: list[EpochScores]
    test: TestScores | None = None
    # True once the run ended (final validation included); the epochs of a stopped or failed run
    # are written too, without it.
    finished: bool = False

    @property
    def headline(self) -> float | None:
        """The run's one figure: `monitor` of the epoch the selection rule reports, as the final
        validation scored it (original geometry, decided post-processing). The console, the
        trackers (`reported/<name>`, TensorBoard's `hp_metric`), train.py's return value and so
        the sweepers' objective show it."""
        return self.selected.scores.value(self.monitor) if self.selected else None


def write_metrics(run_dir: Path, metrics: RunMetrics) -> Path:
    return write_json(Path(run_dir) / METRICS_FILE, asdict(metrics))


def read_metrics(run_dir: Path) -> RunMetrics | None:
    """The run's metrics.json, None when it has none; DataError naming the file if unreadable."""
    return _read_json(Path(run_dir) / METRICS_FILE, "metrics", RunMetrics)


@dataclass
class SplitFile:
    """Content of split.json: the run's patients per subset, how they were chosen, the data root."""

    kind: str
    train: list[str]
    val: list[str]
    test: list[str] = field(default_factory=list)
    root: str | None = None
    n_inner_val: int = 0  # >= 1: the test set is the held-out fold (inner-validation rule)


def write_split(run_dir: Path, split: SplitFile) -> Path:
    return write_json(Path(run_dir) / SPLIT_FILE, asdict(split))


def read_split(run_dir: Path) -> SplitFile | None:
    """The run's split.json, None when it has none (a job that failed before training)."""
    return _read_json(Path(run_dir) / SPLIT_FILE, "split", SplitFile)


@dataclass
class Failure:
    """Content of failure.json: the exception of a failed sweep job."""

    error: str
    type: str
    traceback: str = ""

    @property
    def headline(self) -> str:
        """`Type: first line of the message`."""
        return f"{self.type}: {self.error}".splitlines()[0]


def write_failure(job_dir: Path, failure: Failure) -> Path:
    return write_json(Path(job_dir) / FAILURE_FILE, asdict(failure))


def read_failure(job_dir: Path) -> Failure | None:
    return _read_json(Path(job_dir) / FAILURE_FILE, "failure", Failure)


@dataclass
class Pruned:
    """Content of pruned.json: the epoch (from 1) whose `monitor` value made the pruner stop."""

    epoch: int
    value: float


def write_pruned(job_dir: Path, pruned: Pruned) -> Path:
    return write_json(Path(job_dir) / PRUNED_FILE, asdict(pruned))


def read_pruned(job_dir: Path) -> Pruned | None:
    return _read_json(Path(job_dir) / PRUNED_FILE, "pruned", Pruned)


def score_columns(rows: Sequence[dict[str, Any]], metric_columns: Sequence[str]) -> list[str]:
    """dsc.csv's columns: patient, subset where the rows have one, the metrics, the sizes."""
    subset = [SUBSET_COLUMN] if SUBSET_COLUMN in rows[0] else []
    return [PATIENT_COLUMN, *subset, *metric_columns, *VOLUME_COLUMNS]


def write_scores_table(out_dir: Path, rows: Sequence[dict[str, Any]], columns: list[str]) -> Path:
    """dsc.csv: one row per patient, floats with 6 decimals."""
    path = Path(out_dir) / SCORES_FILE
    with atomic_writer(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in columns}
            )
    return path
