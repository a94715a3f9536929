"""Resuming a sweep: the same command with `hydra.sweep.dir=<the sweep>` runs what is missing."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PROJECT, compose, run_cli, tiny_train_overrides
from omegaconf import OmegaConf, open_dict

from brainseg.errors import ConfigError
from brainseg.hydra_callbacks import check_sweep_directory


def _command(root: Path, sweep: Path, *overrides: str) -> list[str]:
    base = [
        o for o in tiny_train_overrides(root, sweep, sweep.parent / "cache") if "run.dir" not in o
    ]
    lrs = ",".join(f"{k}e-3" for k in range(1, 7))
    return ["train.py", "-m", *base, f"hydra.sweep.dir={sweep}", f"optimizer.lr={lrs}", *overrides]


def _finished(sweep: Path) -> dict[str, int]:
    """Job -> mtime of its metrics.json, for the jobs that have one."""
    files = sweep.glob("*/metrics.json")
    return {p.parent.name: p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_only_its_missing_jobs(
    synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    command = _command(synthetic_root, sweep, "trainer.max_epochs=1")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    launcher = subprocess.Popen(
        [sys.executable, *command],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while len(_finished(sweep)) < 3:
        assert launcher.poll() is None and time.monotonic() < deadline, "the sweep did not get far"
        time.sleep(0.1)
    launcher.kill()  # SIGKILL: no handler runs, as when a node dies
    launcher.wait(60)
    before = _finished(sweep)
    assert len(before) == 3, before

    result = run_cli(*command, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    after = _finished(sweep)
    assert sorted(after) == [str(k) for k in range(6)]
    assert {job: after[job] for job in before} == before  # the finished jobs did not run again
    with open(sweep / "summary.csv") as fh:
        status = {row["job"]: row["status"] for row in csv.DictReader(fh)}
    assert {job for job, s in status.items() if s == "reused"} == set(before)
    assert {s for job, s in status.items() if job not in before} <= {"done", "resumed"}
    assert "6 jobs: " in (sweep / "summary.md").read_text()

    changed = run_cli(*_command(synthetic_root, sweep, "trainer.max_epochs=2"), cwd=PROJECT)
    errors = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert changed.returncode == 2 and errors == [
        (
            f"error: {sweep / '0'}: job 0 was run with trainer.max_epochs=1, this command gives "
            "trainer.max_epochs=2; resume a sweep with its own command, or choose a new "
            "hydra.sweep.dir"
        )
    ]
    assert _finished(sweep) == after


def _multirun_config(sweep: Path):
    config = compose([f"hydra.sweep.dir={sweep}"])
    with open_dict(config):
        config.hydra.job.name = "train"
    return config


def test_an_existing_directory_must_be_a_sweep_of_the_same_command(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    check_sweep_directory(_multirun_config(folder))  # empty: a new sweep
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as refused:
        check_sweep_directory(_multirun_config(folder))
    assert str(refused.value) == (
        f"hydra.sweep.dir={folder}: not a sweep directory (no multirun.yaml); give an "
        "existing sweep to resume it, or a new directory"
    )
    predict = _multirun_config(folder)
    predict.hydra.job.name = "predict"
    OmegaConf.save(predict, folder / "multirun.yaml")
    with pytest.raises(ConfigError, match="a sweep with hydra.job.name=predict, not train"):
        check_sweep_directory(_multirun_config(folder))


def test_a_job_directory_a_live_process_holds_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Before, a second sweep into a live one wrote its job's failure.json and .hydra/ into the
    first sweep's running job."""
    import fcntl

    from hydra.core.utils import JobStatus

    from brainseg.run_lock import LOCK_NAME
    from hydra_plugins.brainseg_launcher.local import holding_its_directory

    config = _multirun_config(tmp_path / "sweep")
    with open_dict(config):
        config.hydra.job.num = 0
        config.hydra.overrides.task = ["seed=1"]
    job_dir = tmp_path / "sweep" / "0"
    job_dir.mkdir(parents=True)
    held = os.open(job_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # as another live process does
    fcntl.flock(held, fcntl.LOCK_EX)
    ran = []
    try:
        refused = holding_its_directory(config, lambda: ran.append(1))
    finally:
        os.close(held)
    assert refused.status == JobStatus.FAILED and "run directory in use" in str(
        refused._return_value
    )
    assert not ran and sorted(p.name for p in job_dir.iterdir()) == [LOCK_NAME]
    assert holding_its_directory(config, lambda: "ran") == "ran"
    assert not (job_dir / LOCK_NAME).exists()  # released after the job


def test_a_reused_job_returns_the_headline_train_py_returns(tmp_path: Path) -> None:
    """A finished job of a resumed sweep gives the sweeper its headline (the reported epoch in
    the original geometry), as train.py does; before, its best epoch's training-grid value."""
    from brainseg.runfiles import EpochScores, RunMetrics, Selected, write_metrics
    from hydra_plugins.brainseg_launcher.local import reused_return

    config = _multirun_config(tmp_path / "sweep")
    with open_dict(config):
        config.hydra.job.num = 0
        config.hydra.sweep.subdir = "0"
    job_dir = tmp_path / "sweep" / "0"
    (job_dir / ".hydra").mkdir(parents=True)
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    OmegaConf.save(task, job_dir / ".hydra" / "config.yaml")
    best = EpochScores(1, 10, {"val/dsc_volume": 0.8})
    reported = EpochScores(2, 20, {"val/dsc_volume": 0.6})
    metrics = RunMetrics(
        "val/dsc_volume", True, "last", Selected(reported, "last"), best, None, None, 2, 1.0, []
    )
    write_metrics(job_dir, dataclasses.replace(metrics, finished=True))
    assert reused_return(config)._return_value == metrics.headline == 0.6
