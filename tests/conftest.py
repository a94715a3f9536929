"""Shared fixtures: a tiny synthetic dataset in the kaggle_3m layout, and one tiny trained run.

The suite runs on every core (pytest-xdist, pyproject's addopts). The session fixtures are built
once for all workers, under a file lock, and are read-only for the tests; each worker's torch
gets its share of the cores, so that the workers do not fight over them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import PROJECT, run_cli, snapshot, tiny_train_overrides

from brainseg.data.synthetic import generate

LONGEST_FIRST = ("realdata", "slow")  # markers of the tests that run longest


def _threads_per_worker() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


if "PYTEST_XDIST_WORKER" in os.environ:
    # Set before torch starts its thread pool; the CLIs the tests start inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads_per_worker()))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share one outside server or device, or a module-scoped fixture (built once per
    worker), run on one worker (`--dist loadgroup`). The longest go first (the real-data run, then
    the end-to-end ones), so that no worker is left alone with one at the end."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: [item.get_closest_marker(m) is None for m in LONGEST_FIRST])
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.xdist_group("gpu"))
        else:
            fixtures = getattr(item, "_fixtureinfo", None)
            defs = fixtures.name2fixturedefs.values() if fixtures else ()
            if any(d[-1].scope == "module" for d in defs):
                item.add_marker(pytest.mark.xdist_group(item.path.name))


def _built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` run by the first worker that needs `folder`; the others wait and reuse it.
    A folder without its `.done` marker (a build that failed) is built again."""
    shared = factory.getbasetemp().parent if "PYTEST_XDIST_WORKER" in os.environ else None
    if shared is None:
        folder = factory.mktemp(name)
        build(folder)
        return folder
    folder = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not (shared / f"{name}.done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (shared / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 patients, 64x64 slices, 10-12 slices each: small enough for CPU end-to-end runs."""

    def build(folder: Path) -> None:
        generate(folder / "lgg", n_patients=6, seed=1, size=64, slices=(10, 12))

    return _built_once(tmp_path_factory, "synthetic", build) / "lgg"


@pytest.fixture
def copied_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic data that a test may damage."""
    root = tmp_path / "lgg"
    shutil.copytree(synthetic_root, root)
    return root


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny `python train.py` run, shared by the tests that read its outputs or checkpoints
    (a test that writes into a run trains or copies its own)."""

    def build(base: Path) -> None:
        before = snapshot(synthetic_root)
        result = run_cli(
            "train.py",
            *tiny_train_overrides(synthetic_root, base / "run", base / "cache"),
            cwd=PROJECT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert snapshot(synthetic_root) == before, "training wrote under the data root"
        assert "reported/dsc_volume " in result.stdout + result.stderr
        (base / "console.txt").write_text(result.stdout + result.stderr)  # a redirected run's

    return _built_once(tmp_path_factory, "train", build) / "run"
