"""Library noise that brainseg drops: lines that only advertise or repeat what brainseg chose."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from brainseg.quiet import quiet_libraries


def test_srun_hint_is_not_printed_where_srun_is_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning warns on every start on a SLURM login node that `srun` exists but is unused."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        SLURMEnvironment._validate_srun_used()
    assert any("srun" in str(w.message) for w in before)  # the hint exists without the filter
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        quiet_libraries()
        SLURMEnvironment._validate_srun_used()
    assert not any("srun" in str(w.message) for w in after)
