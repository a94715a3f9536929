"""The Optuna search end to end: pruning, resuming a study, a study shared through PostgreSQL."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from helpers import PROJECT, run_cli, sweep_study, tiny_train_overrides
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from brainseg.runfiles import read_metrics, read_pruned
from hydra_plugins.brainseg_sweeper._study import load_study


def _search(root: Path, sweep: Path, *overrides: str) -> list[str]:
    base = [
        o for o in tiny_train_overrides(root, sweep, sweep.parent / "cache") if "run.dir" not in o
    ]
    return ["train.py", *base, "hparams_search=optuna", f"hydra.sweep.dir={sweep}", *overrides]


@pytest.mark.slow
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
    assert [t.state for t in sweep_study(sweep).trials] == [TrialState.COMPLETE, TrialState.PRUNED]


def _launch(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_killed_study_resumes_to_its_number_of_trials(
    synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "study"
    command = _search(
        synthetic_root,
        sweep,
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-4, 1e-2))', "
        "loss: 'choice(dice)', model.arch: 'choice(unet)'}",
    )
    search = _launch(command)
    deadline = time.monotonic() + 600
    while len(list(sweep.glob("*/metrics.json"))) < 4:
        assert search.poll() is None and time.monotonic() < deadline, "the study did not get far"
        time.sleep(0.1)
    search.kill()  # SIGKILL: the running trial stays RUNNING in the journal
    search.wait(60)
    kept = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}

    result = run_cli(*command, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sweep_study(sweep).trials
    # the trial the kill left running ran again in its job, as the same trial
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert len({t.user_attrs["job_dir"] for t in trials}) == 8
    assert {p: sweep.joinpath(p, "metrics.json").stat().st_mtime_ns for p in kept} == kept
    assert len(list(sweep.glob("*/metrics.json"))) == 8


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("BRAINSEG_TEST_POSTGRES"),
    reason="no PostgreSQL server: start one with scripts/postgres_local.sh start, then its env",
)
def test_two_sweepers_share_one_study_on_postgresql(synthetic_root: Path, tmp_path: Path) -> None:
    url, study = os.environ["BRAINSEG_TEST_POSTGRES"], f"shared-{time.time_ns()}"
    searches = [
        _launch(
            _search(
                synthetic_root,
                tmp_path / str(k) / "sweep",
                "trainer.max_epochs=1",
                "hydra.sweeper.n_trials=8",
                f"hydra.sweeper.storage={url}",
                f"hydra.sweeper.study_name={study}",
                "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-4, 1e-2))', "
                "loss: 'choice(dice)', model.arch: 'choice(unet)'}",
            )
        )
        for k in range(2)
    ]
    for search in searches:
        _, stderr = search.communicate(timeout=900)
        assert search.returncode == 0, stderr[-3000:]
    trials = sweep_study(tmp_path, url, study).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    jobs = [
        p.parent for k in range(2) for p in (tmp_path / str(k) / "sweep").glob("*/metrics.json")
    ]
    assert sorted(t.user_attrs["job_dir"] for t in trials) == sorted(map(str, jobs))
    assert len({t.params["optimizer.lr"] for t in trials}) == 8


def _study(tmp_path: Path, **settings: object) -> optuna.Study:
    space = settings.pop("space", {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)})
    defaults = {"direction": "maximize", "study_name": "s", "storage": None, "sampler": None}
    return load_study({**defaults, "pruner": None, **settings}, space, tmp_path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"direction": "minimize"},
            "error: hydra.sweeper.direction=minimize: study 's' was created to maximize;",
        ),
        (
            {"space": {"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}},
            "error: hydra.sweeper.params.optimizer.lr: study 's' searches another space",
        ),
        (
            {"pruner": optuna.samplers.RandomSampler()},
            "error: hydra.sweeper.pruner: RandomSampler is not an Optuna pruner",
        ),
        (  # a database that cannot be reached: named without its password
            {"storage": "postgresql://brainseg:secret@127.0.0.1:9/nowhere"},
            (
                "error: hydra.sweeper.storage=postgresql://brainseg:***@127.0.0.1:9/nowhere: "
                "cannot open the study's database: "
            ),
        ),
    ],
)
def test_a_study_that_does_not_fit_the_command_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, change: dict, expected: str
) -> None:
    """Checked when the search starts, before its first job."""
    _study(tmp_path)  # the study of the first start
    assert (tmp_path / "optuna.journal").is_file()
    with pytest.raises(SystemExit) as stopped:
        _study(tmp_path, **change)
    out, error = capsys.readouterr()
    assert stopped.value.code == 2 and error.startswith(expected) and error.count("\n") == 1
    assert "secret" not in out + error


class _Trial:
    """The part of an Optuna trial the pruning callback uses; its pruner always says stop."""

    number = 0

    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return True


@pytest.mark.parametrize(("batches_done", "reported"), [(10, [(0.5, 2)]), (4, [])])
def test_the_pruner_never_sees_an_epoch_cut_before_its_last_batch(
    tmp_path: Path, batches_done: int, reported: list
) -> None:
    """An epoch that max_time/max_steps cut is validated, but its figure is no epoch's: it is not
    reported to the trial, as it is neither reported by the run nor checkpointed."""
    import torch

    from hydra_plugins.brainseg_sweeper._pruning import OptunaPruning

    progress = SimpleNamespace(current=SimpleNamespace(ready=batches_done))
    trainer = SimpleNamespace(
        callback_metrics={"val/loss": torch.tensor(0.5)},
        sanity_checking=False,
        current_epoch=1,
        num_training_batches=10,
        should_stop=False,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(done=True, batch_progress=progress)),
    )
    pruning = OptunaPruning("val/loss")
    pruning.trial, pruning.job_dir = _Trial(), tmp_path
    pruning.on_validation_end(trainer, None)
    assert pruning.trial.reports == reported
    assert trainer.should_stop == (read_pruned(tmp_path) is not None) == bool(reported)
