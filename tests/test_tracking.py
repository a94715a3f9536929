"""What the W&B run summary and tags hold, without a W&B run (offline runs: test_trackers.py)."""

from __future__ import annotations

from pathlib import Path

from brainseg.runfiles import EpochScores, RunMetrics, Selected
from brainseg.tracking import summary_values, wandb_logger


def _metrics(selection: str) -> RunMetrics:
    best = EpochScores(2, 20, {"val/dsc_volume": 0.8, "val/dsc_volume_median": 0.85, "val/hd95": 3})
    last = EpochScores(
        3, 30, {"val/dsc_volume": 0.7, "val/dsc_volume_median": 0.9, "val/hd95": 5}, 0.2
    )
    reported = last if selection == "last" else best
    return RunMetrics(
        monitor="val/dsc_volume",
        higher_is_better=True,
        selection=selection,
        selected=Selected(reported, selection),
        best=best,
        best_checkpoint=None,
        last_checkpoint=None,
        epochs=3,
        train_seconds=1.0,
        history=[best, last],
    )


def test_the_summary_describes_one_epoch_and_labels_the_best_apart() -> None:
    for selection, epoch in (("last", 3), ("best_on_val", 2)):
        metrics = _metrics(selection)
        scores = metrics.selected.scores
        summary = summary_values(metrics)
        assert {k: v for k, v in summary.items() if k.startswith("val/")} == {
            "val/dsc_volume": scores.dsc_volume_mean,
            "val/dsc_volume_median": scores.dsc_volume_median,
            "val/hd95": scores.value("val/hd95"),
        }
        assert summary["epoch"] == epoch and summary["reported/selection"] == selection
        assert summary["best_on_val/dsc_volume"] == 0.8 and summary["best_on_val/epoch"] == 2


def test_shared_overrides_become_tags(tmp_path: Path) -> None:
    logger = wandb_logger(
        save_dir=str(tmp_path),
        offline=True,
        tags=["baseline"],
        shared_overrides=["trainer.max_epochs=20", f"data.root={'x' * 80}"],
    )
    tags = logger._wandb_init["tags"]
    assert tags[:2] == ["baseline", "trainer.max_epochs=20"]
    assert tags[2] == f"data.root={'x' * 80}"[:64]  # W&B refuses tags over 64 characters
