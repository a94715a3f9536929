"""Shared fixtures: a tiny synthetic dataset in the kaggle_3m layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
