"""Shared fixtures: a tiny synthetic dataset in the kaggle_3m layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import PROJECT, run_cli, snapshot, tiny_train_overrides

from brainseg.data.synthetic import generate


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 patients, 64x64 slices, 10-12 slices each: small enough for CPU end-to-end runs."""
    root = tmp_path_factory.mktemp("synthetic") / "lgg"
    generate(root, n_patients=6, seed=1, size=64, slices=(10, 12))
    return root


@pytest.fixture
def copied_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic data that a test may damage."""
    root = tmp_path / "lgg"
    shutil.copytree(synthetic_root, root)
    return root


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny `python train.py` run, shared by the tests that read its outputs or checkpoints."""
    base = tmp_path_factory.mktemp("train")
    before = snapshot(synthetic_root)
    result = run_cli(
        "train.py", *tiny_train_overrides(synthetic_root, base / "run", base / "cache"), cwd=PROJECT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(synthetic_root) == before, "training wrote under the data root"
    assert "reported/dsc_volume " in result.stdout + result.stderr
    (base / "console.txt").write_text(result.stdout + result.stderr)  # what a redirected run prints
    return base / "run"
