"""The SLURM launcher's stop when a pending job can never start, without a SLURM cluster."""

from __future__ import annotations

import subprocess

import pytest

from hydra_plugins.brainseg_launcher import slurm

pytestmark = pytest.mark.slurm


@pytest.mark.parametrize(
    ("job_ids", "cancelled"),
    [(["41"], "cancelled the sweep's SLURM job 41"), (["41", "42"], "SLURM jobs (41, 42)")],
)
def test_a_job_that_can_never_start_is_named_with_what_was_cancelled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, job_ids: list, cancelled: str
) -> None:
    states = {job: ("PENDING", "DependencyNeverSatisfied") for job in job_ids}
    monkeypatch.setattr(slurm, "queue_states", lambda ids: states)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: calls.append(args))
    with pytest.raises(SystemExit):
        slurm.SlurmLauncher._watch(object.__new__(slurm.SlurmLauncher), job_ids)
    assert calls == [["scancel", *job_ids]]
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: SLURM job 41 can never start: DependencyNeverSatisfied")
    assert error.endswith(cancelled)  # before: "cancelled the sweep's jobs 41"
