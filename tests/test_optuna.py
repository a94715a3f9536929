"""The Optuna search end to end: pruning, resuming a study, a study shared through PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers import PROJECT, run_cli, tiny_train_overrides
from omegaconf import OmegaConf

from brainseg.runfiles import read_metrics, read_pruned

pytestmark = pytest.mark.slow


def _search(root: Path, sweep: Path, *overrides: str) -> list[str]:
    base = [
        o for o in tiny_train_overrides(root, sweep, sweep.parent / "cache") if "run.dir" not in o
    ]
    return ["train.py", *base, "hparams_search=optuna", f"hydra.sweep.dir={sweep}", *overrides]


def test_a_median_pruner_stops_a_diverging_trial_after_its_first_epoch(
    synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "pruned"
    # The seeded sampler draws lr=0.001 first (a full run, the median's reference), then lr=100.
    result = run_cli(
        *_search(
            synthetic_root,
            sweep,
            "monitor=val/loss",
            "trainer.max_epochs=3",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.seed=15",
            "hydra.sweeper.params={optimizer.lr: 'choice(0.001, 100.0)'}",
            "hydra.sweeper.pruner={_target_: optuna.pruners.MedianPruner, n_startup_trials: 1}",
        ),
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = {k: read_metrics(sweep / str(k)).epochs for k in range(2)}
    assert epochs == {0: 3, 1: 1}  # stopped early, its record and checkpoints kept
    assert read_pruned(sweep / "0") is None and read_pruned(sweep / "1").epoch == 1
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    with open(sweep / "summary.csv") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["done", "pruned"]
    with open(sweep / "comparison.csv") as fh:
        assert [row["jobs"] for row in csv.DictReader(fh)] == ["1"]  # the pruned trial: no result
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.trials == {"complete": 1, "pruned": 1} and results.best_trial == 0
