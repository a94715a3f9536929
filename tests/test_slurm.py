"""SLURM through hydra-submitit-launcher on a real (local) cluster: a 2-job sweep, and one job
with 2 srun tasks doing CPU DDP. Skipped when no cluster answers (CI starts one with
scripts/slurm_local.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import PROJECT, run_cli

pytestmark = pytest.mark.slow

STATE = Path(os.environ.get("BRAINSEG_SLURM_DIR", "/tmp/brainseg-slurm"))


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    conf = os.environ.get("SLURM_CONF", str(STATE / "slurm.conf"))
    env = {"SLURM_CONF": conf, "PATH": f"{STATE / 'bin'}:{os.environ['PATH']}"}
    try:
        subprocess.run(["sinfo", "-h"], env={**os.environ, **env}, timeout=10, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no SLURM cluster answers (start one with: bash scripts/slurm_local.sh start)")
    return env


def _slurm_sweep(root: Path, sweep: Path, env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(
        "train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=10", f"hydra.sweep.dir={sweep}",
        f"data.root={root}", f"data.cache_dir={sweep.parent / 'cache'}", "data.split.n_val=2", "data.preprocess.image_size=32",
        "data.num_workers=0", "model.encoder_name=resnet18", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        *overrides, cwd=PROJECT, env=env, timeout=400,
    )


def test_two_job_sweep_through_slurm(slurm_env, synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = _slurm_sweep(synthetic_root, sweep, slurm_env, "model.encoder_depth=3", "model.decoder_channels=[32,16,8]",
                          "data.batch_size=8", "loss=dice,bce_dice")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'slurm' sweep output dir" in result.stdout + result.stderr
    report = (sweep / "summary.md").read_text()
    assert "2 jobs, 2 ok, 0 failed" in report and "| loss=bce_dice |" in report
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2  # the jobs ran as SLURM jobs


def test_two_task_cpu_ddp_job_under_srun(slurm_env, synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "ddp"
    result = _slurm_sweep(synthetic_root, sweep, slurm_env, "model.decoder_channels=[32,16,8,8,8]", "data.batch_size=4",
                          "trainer.devices=2", "trainer.strategy=ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert "1 jobs, 1 ok, 0 failed" in (sweep / "summary.md").read_text()
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert len(metrics["best"]["per_patient"]) == 2
