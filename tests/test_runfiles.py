"""The files a run's stages hand each other: each written and read back through its owner,
brainseg.runfiles, and no reader asking for a field the owner does not define."""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
from helpers import PROJECT

from brainseg import runfiles
from brainseg.errors import DataError
from brainseg.runfiles import (
    EpochScores,
    Failure,
    RunMetrics,
    Selected,
    SplitFile,
    TestScores,
    read_failure,
    read_metrics,
    read_split,
    write_failure,
    write_metrics,
    write_split,
)


def _metrics() -> RunMetrics:
    first = EpochScores(1, 10, {"val/dsc_volume": 0.5, "val/hd95": 9.0, "val/loss": 0.7}, 0.9)
    second = EpochScores(
        2,
        20,
        {"val/dsc_volume": 0.6, "val/dsc_volume_median": 0.65, "val/hd95": 4.0, "val/loss": 0.5},
        0.6,
        per_patient={"A": 0.6},
        per_patient_metrics={"A": {"dsc": 0.6, "hd95": 4.0}},
    )
    test = TestScores(
        "best_on_val",
        2,
        {"test/dsc_volume": 0.7, "test/dsc_volume_median": 0.7},
        {"B": 0.7},
        {"B": {"dsc": 0.7}},
        "/run/b.ckpt",
    )
    return RunMetrics(
        monitor="val/hd95",
        higher_is_better=False,
        selection="last",
        selected=Selected(
            second, "last", "last epoch", "/run/checkpoints/last.ckpt", training_grid=first
        ),
        best=second,
        best_checkpoint="/run/checkpoints/best-epoch002-hd95_4.0000.ckpt",
        last_checkpoint="/run/checkpoints/last.ckpt",
        epochs=2,
        train_seconds=3.5,
        history=[first, second],
        test=test,
    )


def test_each_run_file_reads_back_what_was_written(tmp_path: Path) -> None:
    metrics = _metrics()
    write_metrics(tmp_path, metrics)
    back = read_metrics(tmp_path)
    assert back == metrics
    assert back.best.value("val/hd95") == 4.0 and back.selected.scores.dsc_volume_mean == 0.6
    assert back.test.dsc_volume_mean == 0.7 == back.test.as_selected().scores.dsc_volume_mean
    split = SplitFile("k_fold", ["A", "B"], ["C"], ["D"], "/data", n_inner_val=1)
    write_split(tmp_path, split)
    assert read_split(tmp_path) == split
    failure = Failure("out of memory\nin layer 3", "RuntimeError", "Traceback ...")
    write_failure(tmp_path, failure)
    assert read_failure(tmp_path) == failure and failure.headline == "RuntimeError: out of memory"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_metrics(empty) is read_split(empty) is read_failure(empty) is None
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files, all renamed


def test_metrics_are_keyed_by_the_logged_names(tmp_path: Path) -> None:
    """Each epoch's scores are stored under the names the trackers show (val/dsc_volume, ...)."""
    write_metrics(tmp_path, _metrics())
    written = json.loads((tmp_path / runfiles.METRICS_FILE).read_text())
    assert set(written["best"]["values"]) == {
        "val/dsc_volume",
        "val/dsc_volume_median",
        "val/hd95",
        "val/loss",
    }
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]


def test_an_older_layout_of_metrics_json_is_named_in_one_line(tmp_path: Path) -> None:
    """A metrics.json of another layout (fields named dsc_volume_mean, epochs from 0) is refused
    naming the file, never read with its fields misplaced or a KeyError later."""
    entry = {"epoch": 4, "step": 50, "dsc_volume_mean": 0.6, "dsc_volume_median": 0.7}
    old = {
        "monitor": "val/dsc_volume",
        "selection": "last",
        "selected": {**entry, "rule": "last", "checkpoint": None, "per_patient": {"A": 0.6}},
        "best": {**entry, "epoch": 2},
        "history": [{**entry, "epoch": e} for e in range(5)],
        "train_seconds": 1.0,
    }
    path = tmp_path / runfiles.METRICS_FILE
    for content in (old, {**_metrics_dict(), "monitor_field": "hd95"}, [old]):
        path.write_text(json.dumps(content))
        with pytest.raises(DataError) as raised:
            read_metrics(tmp_path)
        message = str(raised.value)
        assert message.startswith(f"{path}: not a metrics file (") and "\n" not in message


def _metrics_dict() -> dict:
    return json.loads(json.dumps(dataclasses.asdict(_metrics())))


def test_the_score_table_reads_back_with_its_columns_in_order(tmp_path: Path) -> None:
    rows = [
        {"patient": "A", "subset": "val", "dsc": 0.5, "hd95": 3.25, "lesion_voxels": 10},
        {"patient": "B", "subset": "train", "dsc": 1.0, "hd95": 0.0, "lesion_voxels": 0},
    ]
    rows = [{**r, "predicted_voxels": 7, "slices": 20} for r in rows]
    columns = runfiles.score_columns(rows, ["dsc", "hd95"])
    assert columns == ["patient", "subset", "dsc", "hd95", *runfiles.VOLUME_COLUMNS]
    runfiles.write_scores_table(tmp_path, rows, columns)
    with open(tmp_path / runfiles.SCORES_FILE, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [list(row) for row in back] == [columns, columns]
    assert [float(row["hd95"]) for row in back] == [3.25, 0.0] and back[1]["subset"] == "train"
    without_subset = [{k: v for k, v in r.items() if k != "subset"} for r in rows]
    assert "subset" not in runfiles.score_columns(without_subset, ["dsc"])


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    rows = [{"patient": "A", "dsc": 0.5, **dict.fromkeys(runfiles.VOLUME_COLUMNS, 1)}]
    columns = runfiles.score_columns(rows, ["dsc"])
    runfiles.write_scores_table(tmp_path, rows, columns)
    before = (tmp_path / runfiles.SCORES_FILE).read_text()
    with pytest.raises(KeyError):  # the second row lacks a column: the table is left unfinished
        runfiles.write_scores_table(tmp_path, [{**rows[0], "dsc": 0.9}, {"patient": "B"}], columns)
    assert (tmp_path / runfiles.SCORES_FILE).read_text() == before  # before: a mix of both
    assert sorted(p.name for p in tmp_path.iterdir()) == [runfiles.SCORES_FILE]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (runfiles.SPLIT_FILE, '{"train": []}'),
        (runfiles.FAILURE_FILE, "[1, 2]"),
        (runfiles.METRICS_FILE, "{not json"),
    ],
)
def test_a_broken_run_file_is_named_in_one_line(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    reader = {
        runfiles.SPLIT_FILE: read_split,
        runfiles.FAILURE_FILE: read_failure,
        runfiles.METRICS_FILE: read_metrics,
    }[name]
    with pytest.raises(DataError, match=re.escape(str(tmp_path / name))):
        reader(tmp_path)


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_no_module_but_the_owner_spells_a_run_file_or_its_fields() -> None:
    """A reader that spelled `"best_checkpoint"` or `"failure.json"` itself would break silently
    when the owner renames it; they use the owner's names and attributes instead."""
    owned = {
        runfiles.METRICS_FILE,
        runfiles.SPLIT_FILE,
        runfiles.FAILURE_FILE,
        runfiles.CONFIG_FILE,
        runfiles.SCORES_FILE,
        runfiles.SCORES_SUMMARY_FILE,
        runfiles.SUBSET_COLUMN,
        *runfiles.VOLUME_COLUMNS[:2],  # (slices: a word of other modules too)
        "per_patient_metrics",
        "best_checkpoint",
        "last_checkpoint",
        "training_grid",
    }
    sources = [*(PROJECT / "brainseg").rglob("*.py"), PROJECT / "train.py", PROJECT / "predict.py"]
    spelled = {
        str(path.relative_to(PROJECT)): sorted(owned & _string_constants(path))
        for path in sources
        if path.name != "runfiles.py"
    }
    assert {path: keys for path, keys in spelled.items() if keys} == {}
