"""The per-epoch line of a redirected run: its ETA follows whichever limit stops the fit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import Timer

from brainseg.runfiles import EpochScores
from brainseg.training.report import RunReport

# The first epoch (numbered from 1) after 10 steps.
ENTRY = EpochScores(
    epoch=1,
    step=10,
    values={"val/dsc_volume": 0.5, "val/dsc_volume_median": 0.5},
    train_loss=1.0,
)


def _eta(tmp_path: Path, **trainer: object) -> str:
    report = RunReport(tmp_path, {}, "val/dsc_volume", progress_lines=True)
    report.best = ENTRY
    report._epoch_seconds = [60.0]  # one epoch of 10 steps took a minute
    limits = {"max_epochs": -1, "max_steps": -1, "callbacks": [], **trainer}
    return report._progress_line(SimpleNamespace(**limits), ENTRY).rsplit(" | ", 1)[1]


@pytest.mark.parametrize(
    ("limits", "eta"),
    [
        ({"max_epochs": 101}, "ETA 100.0 min"),
        ({"max_epochs": 1000, "max_steps": 40}, "ETA 3.0 min"),  # before: ETA 999.0 min
        ({"max_epochs": 1000, "callbacks": [Timer({"minutes": 5})]}, "ETA 5.0 min"),
        ({}, "no limit"),
    ],
)
def test_eta_follows_the_first_limit(tmp_path: Path, limits: dict, eta: str) -> None:
    assert _eta(tmp_path, **limits) == eta


@pytest.mark.parametrize(("current_epoch", "cut"), [(0, False), (1, False), (2, True)])
def test_a_recorded_epoch_counts_as_whole_wherever_the_fit_stopped(
    tmp_path: Path, current_epoch: int, cut: bool
) -> None:
    """A stop (SIGTERM, an error) after epoch 1 was validated and recorded, before Lightning
    counted it (current_epoch 0), during epoch 2 (1), or one that cut epoch 2 short (2): one
    whole epoch."""
    report = RunReport(tmp_path, {}, "val/dsc_volume")
    report.history, report.last, report.best = [ENTRY], ENTRY, ENTRY
    ready = SimpleNamespace(current=SimpleNamespace(ready=3 if cut else 0))
    loop = SimpleNamespace(done=cut, batch_progress=ready)
    trainer = SimpleNamespace(
        current_epoch=current_epoch,
        fit_loop=SimpleNamespace(epoch_loop=loop),
        num_training_batches=10,
        checkpoint_callbacks=[],
        checkpoint_callback=None,
    )
    assert report.run_metrics(trainer).epochs == 1  # before: 0 when stopped before the count
