"""W&B, TensorBoard and the CSV log show the numbers the run report shows, read back from the files
they write offline: one headline, the reported epoch's figure; the best epoch labelled apart."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest
from helpers import compose_run, read_wandb_records, wandb_history_and_summary

from brainseg.runfiles import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked_run(
    synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, float]:
    """Three epochs whose last is not the best epoch (seeded), trained by train.py's task
    function (its return value kept) with the CSV, TensorBoard and offline W&B loggers."""
    base = tmp_path_factory.mktemp("trackers")
    run_dir = base / "run"
    cfg = compose_run(
        synthetic_root,
        run_dir,
        base / "cache",
        "trainer.max_epochs=3",
        "optimizer.lr=0.01",
        "logger=[csv,tensorboard,wandb]",
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(base))
        env.setenv("WANDB_API_KEY", "")
        env.delenv("WANDB_MODE", raising=False)
        returned = importlib.import_module("train").main.__wrapped__(cfg)
    metrics = read_metrics(run_dir)
    assert metrics.best.epoch < metrics.history[-1].epoch, "the last epoch must not be the best"
    return run_dir, metrics, returned


def test_one_headline_in_metrics_json_wandb_tensorboard_csv_and_the_return_value(
    tracked_run,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics, returned = tracked_run
    reported, best, headline = metrics.selected, metrics.best, metrics.headline
    assert reported.geometry and reported.training_grid.epoch == reported.scores.epoch == 3
    assert headline == reported.scores.dsc_volume_mean != best.dsc_volume_mean
    assert headline != reported.training_grid.dsc_volume_mean  # the original geometry's
    assert returned == headline  # train.py's return value, which sweepers optimise
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    rows, summary = wandb_history_and_summary(run_file)
    # the summary is each chart's last point: the headline's own, the training grid's, the best's
    assert [r["reported/dsc_volume"] for r in rows if "reported/dsc_volume" in r] == [headline]
    assert summary["reported/dsc_volume"] == headline and summary["reported/epoch"] == 3
    assert summary["val/dsc_volume"] == pytest.approx(metrics.history[-1].dsc_volume_mean)
    assert summary["best_on_val/dsc_volume"] == pytest.approx(best.dsc_volume_mean)
    assert summary["best_on_val/epoch"] == best.epoch
    assert Path(metrics.best_checkpoint).name.startswith(f"best-epoch{best.epoch:03d}-")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(headline)
    assert events.Scalars("reported/dsc_volume")[-1].value == pytest.approx(headline)
    with open(run_dir / "csv" / "metrics.csv") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["reported/dsc_volume"]]
    assert float(row["reported/dsc_volume"]) == pytest.approx(headline)
    run = next(r.run for r in read_wandb_records(run_file) if r.WhichOneof("record_type") == "run")
    assert run.run_group == "" and not run.tags  # only sweep jobs are grouped and tagged


def test_epochs_count_from_1_in_csv_tensorboard_and_wandb(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics, _ = tracked_run
    epochs = [h.epoch for h in metrics.history]
    assert epochs == [1, 2, 3]
    with open(run_dir / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows if r["val/dsc_volume"]] == epochs
    assert {int(r["epoch"]) for r in rows if r["train/loss"]} == set(epochs)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert sorted({int(e.value) for e in events.Scalars("epoch")}) == epochs
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history, _ = wandb_history_and_summary(run_file)
    assert [r["epoch"] for r in history if "val/dsc_volume" in r] == epochs


def test_wandb_logs_mask_overlays_and_the_table_only_when_the_best_improves(tracked_run) -> None:
    run_dir, metrics, _ = tracked_run
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    best, improvements = -1.0, 0
    for entry in metrics.history:
        improvements += entry.dsc_volume_mean > best
        best = max(best, entry.dsc_volume_mean)
    tables = sorted(
        files.glob("media/table/val/dsc_volume_per_patient_*.table.json"),
        key=lambda p: int(p.name.split("_")[-2]),
    )
    assert len(tables) == improvements < len(metrics.history)
    assert dict(json.loads(tables[-1].read_text())["data"]) == pytest.approx(
        metrics.best.per_patient
    )
    # one picture per validation patient (2 here) each time the best improved
    assert len(list(files.glob("media/images/val/overlays_*.png"))) == improvements * len(
        metrics.best.per_patient
    )
    assert list(
        files.glob("media/images/mask/val/overlays_*.mask.png")
    )  # prediction and truth as W&B masks


def test_tensorboard_shows_overlays(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Images("val/overlays")


def test_an_offline_wandb_run_starts_without_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from brainseg.tracking import wandb_logger

    monkeypatch.setenv("HOME", str(tmp_path))
    logger = wandb_logger(save_dir=str(tmp_path), offline=True)
    try:
        logger.experiment.log({"x": 1.0})
    finally:
        logger.experiment.finish()
    output = capfd.readouterr()
    assert "anonymous" not in output.out + output.err  # before: a deprecation warning per job


def test_the_failure_gallery_reaches_both_trackers(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Images("val/failures")
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    assert list(files.glob("media/images/val/failures_*.png"))
