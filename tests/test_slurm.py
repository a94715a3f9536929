"""SLURM through hydra-submitit-launcher on a real (local) cluster: a 2-job sweep, and one job
with 2 srun tasks doing CPU DDP. Skipped when no cluster answers (CI starts one with
scripts/slurm_local.sh)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import PROJECT, run_cli

from brainseg.runfiles import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

STATE = Path(os.environ.get("BRAINSEG_SLURM_DIR", "/tmp/brainseg-slurm"))


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    conf = os.environ.get("SLURM_CONF", str(STATE / "slurm.conf"))
    env = {"SLURM_CONF": conf, "PATH": f"{STATE / 'bin'}:{os.environ['PATH']}"}
    try:
        subprocess.run(
            ["sinfo", "-h"], env={**os.environ, **env}, timeout=10, check=True, capture_output=True
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no SLURM cluster answers (start one with: bash scripts/slurm_local.sh start)")
    return env


def _slurm_sweep(
    root: Path, sweep: Path, env: dict[str, str], *overrides: str
) -> subprocess.CompletedProcess:
    return run_cli(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.signal_delay_s=10",
        f"hydra.sweep.dir={sweep}",
        f"data.root={root}",
        f"data.cache_dir={sweep.parent / 'cache'}",
        "data.split.n_val=2",
        "data.preprocess.image_size=32",
        "data.num_workers=0",
        "model.encoder_name=resnet18",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        *overrides,
        cwd=PROJECT,
        env=env,
        timeout=400,
    )


def test_two_job_sweep_through_slurm_resumed_submits_only_the_unfinished_job(
    slurm_env, synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    overrides = [
        "model.encoder_depth=3",
        "model.decoder_channels=[32,16,8]",
        "data.batch_size=8",
        "loss=dice,bce_dice",
    ]
    result = _slurm_sweep(synthetic_root, sweep, slurm_env, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'slurm' sweep output dir" in result.stdout + result.stderr
    report = (sweep / "summary.md").read_text()
    assert "2 jobs: 2 done." in report and "| loss=bce_dice |" in report
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2  # the jobs ran as SLURM jobs

    (sweep / "1" / "metrics.json").unlink()  # job 1 unfinished, as when its node died
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    resumed = _slurm_sweep(synthetic_root, sweep, slurm_env, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # before: both jobs were submitted again (4 SLURM jobs in all)
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 3
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished
    with open(sweep / "summary.csv") as fh:
        status = {row["job"]: row["status"] for row in csv.DictReader(fh)}
    assert status["0"] == "reused" and status["1"] in ("done", "resumed")


def test_two_task_cpu_ddp_job_under_srun(slurm_env, synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "ddp"
    result = _slurm_sweep(
        synthetic_root,
        sweep,
        slurm_env,
        "model.decoder_channels=[32,16,8,8,8]",
        "data.batch_size=4",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Lightning's lines go through Hydra's log handlers (stdout) since brainseg.quiet drops its own.
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.*"))
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert "1 jobs: 1 done." in (sweep / "summary.md").read_text()
    assert len(read_metrics(sweep / "0").best.per_patient) == 2


def _slurm(env: dict[str, str], *command: str) -> str:
    result = subprocess.run(
        list(command),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.5)


def _saved_epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"] if path.is_file() else -1


def test_requeued_job_resumes_from_its_last_checkpoint(
    slurm_env, synthetic_root: Path, tmp_path: Path
) -> None:
    sweep, epochs = tmp_path / "requeue", 4
    overrides = [
        "model.encoder_depth=3",
        "model.decoder_channels=[32,16,8]",
        "data.batch_size=8",
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
        "callbacks.model_checkpoint.filename='best-epoch{epoch:03d}'",
    ]
    args = [
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
        f"data.root={synthetic_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.split.n_val=2",
        "data.preprocess.image_size=32",
        "data.num_workers=0",
        "model.encoder_name=resnet18",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        *overrides,
    ]
    launcher = subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT,
        env={**os.environ, **slurm_env, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        _wait_for(lambda: _saved_epoch(last) >= 1, 240, "two epochs of the SLURM job")
        (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
        _slurm(slurm_env, "scontrol", "requeue", job_id)
        saved = _saved_epoch(last)
        assert saved < epochs - 1, "the job finished before it could be requeued"
        # A requeued job waits for its credential to expire (2 min by default): start it now.
        _wait_for(
            lambda: "PENDING" in _slurm(slurm_env, "squeue", "-h", "-j", job_id, "-o", "%T"),
            60,
            "the requeue",
        )
        _slurm(slurm_env, "scontrol", "update", f"jobid={job_id}", "StartTime=now")
        _, stderr = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=30)
    assert launcher.returncode == 0, stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.*"))
    resumed = re.findall(rf"resuming from {re.escape(str(last))} \(saved in epoch (\d+)\)", logs)
    assert (
        len(resumed) == 1 and int(resumed[0]) >= saved >= 1
    )  # before: the best checkpoint's epoch (0)
    metrics = read_metrics(sweep / "0")
    assert [h.epoch for h in metrics.history] == list(
        range(1, epochs + 1)
    )  # each epoch once, in one history
    with open(sweep / "0" / "csv" / "metrics.csv") as fh:
        logged = [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/dsc_volume")]
    assert sorted(set(logged)) == list(
        range(1, epochs + 1)
    )  # before: the restart deleted the first session's rows
    assert all(logged.count(e) == 1 for e in range(1, saved + 2))


def _states_within(seconds: float, env: dict[str, str], jobs: str, wanted: set[str]) -> set[str]:
    """The jobs' states (array tasks one by one), polled until all are in `wanted` or time is up."""
    deadline = time.monotonic() + seconds
    while True:
        answer = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--array", f"--jobs={jobs}", "--format=%T"],
            env=env,
            timeout=30,
            capture_output=True,
            text=True,
            check=False,
        )
        states = set(answer.stdout.split())
        if (states and states <= wanted) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_a_job_that_can_never_start_is_reported_and_stops_the_sweep(
    slurm_env, synthetic_root: Path, tmp_path: Path
) -> None:
    """Jobs that depend on a failed job pend with DependencyNeverSatisfied: the sweep says so while
    waiting, cancels its jobs and exits non-zero instead of waiting forever."""
    env = {**os.environ, **slurm_env}
    failed = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap=false"],
        env=env,
        timeout=30,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert _states_within(30, env, failed, {"FAILED"}) == {"FAILED"}
    sweep = tmp_path / "never"
    result = _slurm_sweep(
        synthetic_root,
        sweep,
        slurm_env,
        "hydra.launcher.pending_report_s=1",
        f"+hydra.launcher.additional_parameters.dependency=afterok:{failed}",
        "loss=dice,bce_dice",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "waiting for SLURM: job " in output and "PENDING (" in output
    assert "can never start: DependencyNeverSatisfied" in result.stderr
    jobs = ",".join(
        {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()}
    )
    assert _states_within(30, env, jobs, {"CANCELLED"}) == {"CANCELLED"}
