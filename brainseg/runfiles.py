"""The files the stages of a run hand each other, each with one owner: its name, its fields and the
functions that write and read it. Writers and readers go through this module, so that renaming a
field is one edit here and a reader cannot ask for a field the writer never writes.

- `metrics.json` (training writes it; the sweep report, out-of-fold prediction and train.py's return
  value read it): validation scores per epoch, the best epoch by `monitor`, the epoch the
  `evaluation.selection` rule reports.
- `split.json`: the patients of each subset of a run.
- `failure.json`: why a sweep job failed.
- `dsc.csv`: one row per patient and metric column, written by predict.py and `brainseg.evaluate`.

Epochs are numbered from 1 everywhere a person reads them (console, curves, checkpoint names,
metrics.json, trackers' summaries). metrics.json files written before this numbering (no
`epoch_numbering` field) counted from 0 and are read back shifted by one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from brainseg.errors import ConfigError, DataError

CONFIG_FILE = "config.yaml"  # the run's resolved configuration (YAML)
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"
FAILURE_FILE = "failure.json"
SCORES_FILE = "dsc.csv"
SCORES_SUMMARY_FILE = "dsc_summary.json"
EPOCH_NUMBERING = "1-based"
_EPOCH_NUMBERING_KEY = "epoch_numbering"

# dsc.csv columns around the metric columns (brainseg.metrics): who, which subset (where known),
# and the sizes behind the scores.
PATIENT_COLUMN = "patient"
SUBSET_COLUMN = "subset"
VOLUME_COLUMNS = ["lesion_voxels", "predicted_voxels", "slices"]

# Logged validation names whose metrics.json field is not the name itself.
_FIELD_OF_LOGGED = {"dsc_volume": "dsc_volume_mean", "loss": "val_loss"}
_VALIDATION_PREFIX = "val/"


_Content = TypeVar("_Content")


def _write_json(path: Path, content: dict[str, Any]) -> Path:
    plain = json.loads(json.dumps(content), parse_constant=lambda _: None)  # nan, inf: null
    path.write_text(json.dumps(plain, indent=2, allow_nan=False))
    return path


def _read_json(path: Path, what: str, build: Callable[[Any], _Content]) -> _Content | None:
    """`build(content)` of a JSON run file, None when it does not exist; a DataError naming the
    file when it cannot be read as one."""
    if not path.is_file():
        return None
    try:
        return build(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a {what} file ({exc!r})") from None


def metric_field(logged: str) -> str:
    """The metrics.json field that stores a logged validation metric (`val/hd95` -> `hd95`,
    `val/dsc_volume` -> `dsc_volume_mean`); ConfigError for a name that is not a validation one."""
    if not logged.startswith(_VALIDATION_PREFIX):
        raise ConfigError(
            f"monitor={logged!r}: not a validation metric; use a logged val/ name "
            "such as val/dsc_volume or val/hd95"
        )
    name = logged.removeprefix(_VALIDATION_PREFIX)
    return _FIELD_OF_LOGGED.get(name, name)


def numbered_from_one(state: dict[str, Any]) -> dict[str, Any]:
    """`state` marked as numbering its epochs from 1 (metrics.json, callbacks' checkpoint state)."""
    return {_EPOCH_NUMBERING_KEY: EPOCH_NUMBERING, **state}


def epoch_shift(state: dict[str, Any]) -> int:
    """What to add to the epochs of `state`: 1 when it was written counting from 0."""
    return 0 if state.get(_EPOCH_NUMBERING_KEY) == EPOCH_NUMBERING else 1


def logged_name(field_name: str) -> str:
    """The logged name of a metrics.json field (`dsc_volume_mean` -> `val/dsc_volume`)."""
    logged = {f: name for name, f in _FIELD_OF_LOGGED.items()}
    return _VALIDATION_PREFIX + logged.get(field_name, field_name)


@dataclass
class EpochScores:
    """One validated epoch: every logged validation scalar by its field name (`values`), the
    train loss, and the per-patient Dice and per-patient metrics."""

    epoch: int  # from 1
    step: int
    values: dict[str, float | None]
    train_loss: float | None = None
    per_patient: dict[str, float] = field(default_factory=dict)
    per_patient_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def dsc_volume_mean(self) -> float:
        return self.values[metric_field("val/dsc_volume")]

    @property
    def dsc_volume_median(self) -> float | None:
        return self.values.get(metric_field("val/dsc_volume_median"))

    def value(self, monitor: str) -> float | None:
        """The epoch's value of a logged validation metric (`val/hd95`)."""
        return self.values.get(metric_field(monitor))

    def to_dict(self) -> dict[str, Any]:
        patients = {
            "per_patient": self.per_patient,
            "per_patient_metrics": self.per_patient_metrics,
        }
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": self.train_loss,
            **self.values,
            **{k: v for k, v in patients.items() if v},  # the history's entries hold none
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], epoch_shift: int = 0) -> EpochScores:
        known = {f.name for f in fields(cls)} - {"values"}
        return cls(
            epoch=int(data["epoch"]) + epoch_shift,
            step=int(data.get("step", 0)),
            values={k: v for k, v in data.items() if k not in known},
            train_loss=data.get("train_loss"),
            per_patient=dict(data.get("per_patient") or {}),
            per_patient_metrics=dict(data.get("per_patient_metrics") or {}),
        )


@dataclass
class Selected:
    """The epoch a selection rule reports, with the rule and the checkpoint holding that epoch."""

    scores: EpochScores
    rule: str
    description: str = ""
    checkpoint: str | None = None
    # Set when the scores come from the final validation after training (the patients predicted
    # as predict.py predicts them, the decided post-processing applied); the epoch's own
    # training-grid Dice is kept in `training_grid`.
    geometry: str | None = None
    postprocessing: list[dict[str, Any]] | None = None
    postprocessing_file: str | None = None
    training_grid: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        final = {
            "geometry": self.geometry,
            "postprocessing": self.postprocessing,
            "postprocessing_file": self.postprocessing_file,
            "training_grid": self.training_grid,
        }
        return {
            **self.scores.to_dict(),
            "rule": self.rule,
            "description": self.description,
            "checkpoint": self.checkpoint,
            **{k: v for k, v in final.items() if v is not None},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], epoch_shift: int = 0) -> Selected:
        own = {f.name for f in fields(cls)} - {"scores"}
        return cls(
            scores=EpochScores.from_dict(
                {k: v for k, v in data.items() if k not in own}, epoch_shift
            ),
            rule=data.get("rule") or "best_on_val",
            description=data.get("description") or "",
            checkpoint=data.get("checkpoint"),
            geometry=data.get("geometry"),
            postprocessing=data.get("postprocessing"),
            postprocessing_file=data.get("postprocessing_file"),
            training_grid=data.get("training_grid"),
        )


@dataclass
class TestScores:
    """Per-volume Dice of the test patients, scored with the checkpoint best on validation (`test:
    true`, or the inner-validation rule, under which they are the fold's held-out patients)."""

    __test__ = False  # not a test class

    rule: str
    epoch: int | None
    dsc_volume_mean: float
    dsc_volume_median: float
    per_patient: dict[str, float]
    per_patient_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    checkpoint: str | None = None

    def as_selected(self) -> Selected:
        """These scores in the shape of a reported epoch (the sweep report pools either)."""
        values = {
            metric_field("val/dsc_volume"): self.dsc_volume_mean,
            metric_field("val/dsc_volume_median"): self.dsc_volume_median,
        }
        scores = EpochScores(
            self.epoch or 0, 0, values, None, self.per_patient, self.per_patient_metrics
        )
        return Selected(scores, self.rule, checkpoint=self.checkpoint)

    @classmethod
    def from_dict(cls, data: dict[str, Any], epoch_shift: int = 0) -> TestScores:
        epoch = data.get("epoch")
        return cls(
            rule=data.get("rule") or "best_on_val",
            epoch=None if epoch is None else int(epoch) + epoch_shift,
            dsc_volume_mean=data["dsc_volume_mean"],
            dsc_volume_median=data["dsc_volume_median"],
            per_patient=dict(data["per_patient"]),
            per_patient_metrics=dict(data.get("per_patient_metrics") or {}),
            checkpoint=data.get("checkpoint"),
        )


@dataclass
class RunMetrics:
    """Content of metrics.json."""

    monitor: str
    higher_is_better: bool
    selection: str
    selected: Selected | None
    best: EpochScores | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    epochs: int
    train_seconds: float | None
    history: list[EpochScores]
    test: TestScores | None = None

    @property
    def monitor_field(self) -> str:
        return metric_field(self.monitor)

    @property
    def reported(self) -> Selected | None:
        """The validation scores the run reports under its selection rule (runs written before
        the rules existed report their best epoch)."""
        if self.selected is not None:
            return self.selected
        return None if self.best is None else Selected(self.best, rule="best_on_val")

    def to_dict(self) -> dict[str, Any]:
        return numbered_from_one(
            {
                "monitor": self.monitor,
                "monitor_field": self.monitor_field,
                "higher_is_better": self.higher_is_better,
                "selection": self.selection,
                "selected": self.selected and self.selected.to_dict(),
                "best": self.best and self.best.to_dict(),
                "best_checkpoint": self.best_checkpoint,
                "last_checkpoint": self.last_checkpoint,
                "epochs": self.epochs,
                "train_seconds": self.train_seconds,
                "history": [entry.to_dict() for entry in self.history],
                "test": self.test and asdict(self.test),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        shift = epoch_shift(data)
        best, selected, test = data.get("best"), data.get("selected"), data.get("test")
        return cls(
            monitor=data.get("monitor") or "val/dsc_volume",
            higher_is_better=bool(data.get("higher_is_better", True)),
            selection=data.get("selection") or "best_on_val",
            selected=Selected.from_dict(selected, shift) if selected else None,
            best=EpochScores.from_dict(best, shift) if best else None,
            best_checkpoint=data.get("best_checkpoint"),
            last_checkpoint=data.get("last_checkpoint"),
            epochs=int(data.get("epochs") or 0),
            train_seconds=data.get("train_seconds"),
            history=[EpochScores.from_dict(h, shift) for h in data.get("history") or []],
            test=TestScores.from_dict(test, shift) if test else None,
        )


def write_metrics(run_dir: Path, metrics: RunMetrics) -> Path:
    return _write_json(Path(run_dir) / METRICS_FILE, metrics.to_dict())


def read_metrics(run_dir: Path) -> RunMetrics | None:
    """The run's metrics.json, None when it has none; DataError naming the file if unreadable."""
    return _read_json(Path(run_dir) / METRICS_FILE, "metrics", RunMetrics.from_dict)


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
    return _write_json(Path(run_dir) / SPLIT_FILE, asdict(split))


def _split_file(data: dict[str, Any]) -> SplitFile:
    return SplitFile(
        kind=data.get("kind", "reference"),
        train=list(data.get("train") or []),
        val=list(data["val"]),
        test=list(data.get("test") or []),
        root=data.get("root"),
        n_inner_val=int(data.get("n_inner_val") or 0),
    )


def read_split(run_dir: Path) -> SplitFile | None:
    """The run's split.json, None when it has none (a job that failed before training)."""
    return _read_json(Path(run_dir) / SPLIT_FILE, "split", _split_file)


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
    return _write_json(Path(job_dir) / FAILURE_FILE, asdict(failure))


def _failure(data: dict[str, Any]) -> Failure:
    return Failure(
        error=str(data["error"]), type=str(data["type"]), traceback=data.get("traceback", "")
    )


def read_failure(job_dir: Path) -> Failure | None:
    return _read_json(Path(job_dir) / FAILURE_FILE, "failure", _failure)


def score_columns(rows: Sequence[dict[str, Any]], metric_columns: Sequence[str]) -> list[str]:
    """dsc.csv's columns: patient, subset where the rows have one, the metrics, the sizes."""
    subset = [SUBSET_COLUMN] if SUBSET_COLUMN in rows[0] else []
    return [PATIENT_COLUMN, *subset, *metric_columns, *VOLUME_COLUMNS]


def write_scores_table(out_dir: Path, rows: Sequence[dict[str, Any]], columns: list[str]) -> Path:
    """dsc.csv: one row per patient, floats with 6 decimals."""
    path = Path(out_dir) / SCORES_FILE
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in columns}
            )
    return path


def read_scores_table(out_dir: Path) -> list[dict[str, Any]]:
    """dsc.csv's rows, numbers as floats (patient and subset as text)."""
    text = (PATIENT_COLUMN, SUBSET_COLUMN)
    with open(Path(out_dir) / SCORES_FILE, newline="") as fh:
        return [
            {k: v if k in text else float(v) for k, v in row.items()} for row in csv.DictReader(fh)
        ]
