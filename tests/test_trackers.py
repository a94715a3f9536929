"""W&B and TensorBoard show the numbers the run report shows, read back from the files they write
offline: the summary describes the reported epoch, the best epoch is labelled apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_run, read_wandb_records

pytestmark = pytest.mark.slow


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _final_summary(run_file: Path) -> dict[str, float]:
    """The run summary W&B ends with: each history row updates it, then explicit summary updates."""
    summary: dict[str, float] = {}
    for record in read_wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        items = (
            record.history.item
            if kind == "history"
            else record.summary.update
            if kind == "summary"
            else []
        )
        summary.update({_key(item): json.loads(item.value_json) for item in items})
    return summary


@pytest.fixture(scope="module")
def tracked_run(
    synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """Three epochs whose last is not the best epoch (seeded), W&B offline and TensorBoard."""
    from brainseg.training.pipeline import train

    base = tmp_path_factory.mktemp("trackers")
    run_dir = base / "run"
    cfg = compose_run(
        synthetic_root,
        run_dir,
        base / "cache",
        "trainer.max_epochs=3",
        "optimizer.lr=1.0",
        "trainer.limit_train_batches=2",
        "logger=[tensorboard,wandb]",
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(base))
        env.setenv("WANDB_API_KEY", "")
        env.delenv("WANDB_MODE", raising=False)
        metrics = train(cfg)
    assert metrics.best.epoch < metrics.history[-1].epoch, "the last epoch must not be the best"
    return run_dir, metrics


def test_wandb_summary_is_the_reported_epoch_with_the_best_labelled_apart(tracked_run) -> None:
    run_dir, metrics = tracked_run
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    summary = _final_summary(run_file)
    reported, best = metrics.selected.scores, metrics.best
    assert metrics.selection == "last" and reported.epoch == 3 != best.epoch
    # every val/ key is the reported epoch's, not the best epoch's mean beside the last's median
    for name in ("val/dsc_volume", "val/dsc_volume_median", "val/hd95", "val/nsd", "val/loss"):
        assert summary[name] == pytest.approx(reported.value(name)), name
    assert summary["epoch"] == reported.epoch and summary["reported/selection"] == "last"
    assert summary["best_on_val/dsc_volume"] == pytest.approx(best.dsc_volume_mean)
    # the epoch numbers agree with metrics.json and the best checkpoint's name
    assert summary["best_on_val/epoch"] == best.epoch
    assert Path(metrics.best_checkpoint).name.startswith(f"best-epoch{best.epoch:03d}-")
    run = next(r.run for r in read_wandb_records(run_file) if r.WhichOneof("record_type") == "run")
    assert run.run_group == "" and not run.tags  # only sweep jobs are grouped and tagged


def test_wandb_logs_mask_overlays_and_the_table_only_when_the_best_improves(tracked_run) -> None:
    run_dir, metrics = tracked_run
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


def test_tensorboard_hp_metric_is_the_best_and_it_shows_overlays(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(metrics.best.dsc_volume_mean)
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

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Images("val/failures")
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    assert list(files.glob("media/images/val/failures_*.png"))
