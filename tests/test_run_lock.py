"""A run directory is owned by one live train.py, an output folder by one live predict.py or
`brainseg.evaluate`: a second start is refused naming the owner, a lock left by a dead process is
taken over."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROJECT, compose_run, run_cli, tiny_train_overrides

from brainseg.errors import ConfigError
from brainseg.run_lock import (
    LOCK_NAME,
    claim_output_dir,
    claim_run_directory,
    is_first_rank,
    release_run_directory,
)

HOLD = """
import sys, time
from pathlib import Path
from brainseg.run_lock import claim_run_directory
claim_run_directory(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held_run(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A run directory held by another live process, and that process's pid."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], cwd=PROJECT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield run, holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_run_directory_held_by_a_live_process_is_refused(
    held_run: tuple[Path, int], synthetic_root: Path, tmp_path: Path
) -> None:
    from brainseg.training.pipeline import train

    run, pid = held_run
    owner = f"pid {pid} on host {socket.gethostname()}"
    with pytest.raises(ConfigError, match=f"in use by {owner}"):
        claim_run_directory(run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ConfigError) as raised:  # before: both runs wrote into one folder
        train(compose_run(synthetic_root, run, tmp_path / "cache"))
    assert str(raised.value).startswith(f"{run}: run directory in use by {owner}")
    assert sorted(p.name for p in run.iterdir()) == before == [LOCK_NAME]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": int(dead.stdout), "host": socket.gethostname()}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    assert claim_run_directory(run)
    owner = json.loads((run / LOCK_NAME).read_text())
    assert owner["pid"] != stale["pid"] and owner["host"] == stale["host"]
    release_run_directory(run)
    assert not (run / LOCK_NAME).exists()


@pytest.mark.slow
def test_train_py_refuses_a_busy_run_directory_before_writing(
    held_run: tuple[Path, int], synthetic_root: Path, tmp_path: Path
) -> None:
    run, pid = held_run
    result = run_cli(
        "train.py", *tiny_train_overrides(synthetic_root, run, tmp_path / "cache"), cwd=PROJECT
    )
    assert result.returncode == 2
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {run}: run directory in use by pid {pid}"), line
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # no .hydra/, log or checkpoints


def test_ddp_ranks_work_in_the_directory_rank_0_holds(
    held_run: tuple[Path, int], monkeypatch
) -> None:
    from omegaconf import OmegaConf

    from brainseg.hydra_callbacks import RefuseOutputDirectory

    run, _ = held_run
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}})
    with pytest.raises(SystemExit):
        RefuseOutputDirectory().on_run_start(config)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank Lightning's DDP launcher started
    assert not is_first_rank()
    RefuseOutputDirectory().on_run_start(config)


CLAIM = """
import sys, time
from brainseg.run_lock import claim_output_dir
claim_output_dir(sys.argv[1], "output_dir", {})
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_claimed_output_folder_is_refused(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Two predict.py or `brainseg.evaluate` runs started into one empty folder: the second is
    refused in one line naming the first, instead of both writing there and reporting success."""
    from brainseg.evaluate import main as evaluate

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(out)], cwd=PROJECT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        owner = f"pid {holder.pid} on host {socket.gethostname()}"
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=f"output folder in use by {owner}") as raised:
                claim_output_dir(out, "output_dir", {}, overwrite)
            assert "\n" not in str(raised.value)
        assert evaluate([str(synthetic_root), str(synthetic_root), "--output", str(out)]) == 2
        assert f"output folder in use by {owner}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    assert claim_output_dir(out, "output_dir", {}) == out  # the killed holder's claim is over


def test_an_output_folder_is_claimed_only_outside_the_inputs_and_empty(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "patient").mkdir(parents=True)
    for output in (data, data / "patient" / "out", tmp_path):  # inside, equal, containing
        with pytest.raises(ConfigError, match=f"overlaps the input input={str(data)!r}"):
            claim_output_dir(output, "output_dir", {"input": data}, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_output_dir(tmp_path / "file", "output_dir", {})
    with pytest.raises(ConfigError, match="--output=.* is not empty; .* set --overwrite"):
        claim_output_dir(data / "patient" / "..", "--output", {})
    out = claim_output_dir(tmp_path / "new" / "out", "output_dir", {"input": data})
    assert out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_NAME]
    # this process holds it: it may claim it again, e.g. a second in-process prediction
    assert claim_output_dir(out, "output_dir", {"input": data}) == out
    (out / "mask.tif").write_text("x")
    with pytest.raises(ConfigError, match="is not empty; choose another folder or set overwrite"):
        claim_output_dir(out, "output_dir", {})
    assert claim_output_dir(out, "output_dir", {}, overwrite=True) == out
    with pytest.raises(ConfigError, match="output_dir is required"):
        claim_output_dir(None, "output_dir", {})


def test_the_hydra_callback_holds_the_run_directory_that_train_then_reuses(tmp_path: Path) -> None:
    """The lock is taken before Hydra writes .hydra/ and held for the process: a second start in
    between is refused (before, the callback only checked it, and the second start wrote its
    .hydra/config.yaml into the first one's run)."""
    from omegaconf import OmegaConf

    from brainseg.hydra_callbacks import RefuseOutputDirectory

    run = tmp_path / "run"
    RefuseOutputDirectory().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run)}}}))
    try:
        claim = "import sys; from pathlib import Path; from brainseg.run_lock import *; "
        claim += "claim_run_directory(Path(sys.argv[1]))"
        second = subprocess.run(
            [sys.executable, "-c", claim, str(run)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert f"run directory in use by pid {os.getpid()}" in second.stderr
        assert not claim_run_directory(run)  # train.py's claim: held already by this process
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()  # still held
    finally:
        release_run_directory(run)
    assert not (run / LOCK_NAME).exists()


def test_a_sweep_directory_held_by_a_live_process_is_refused_before_writing(
    held_run: tuple[Path, int], capsys
) -> None:
    from helpers import compose

    from brainseg.hydra_callbacks import SweepGuard

    sweep, pid = held_run
    config = compose([f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as info:  # before: the second sweep ran into the first one
        SweepGuard().on_multirun_start(config)
    assert info.value.code == 2
    assert f"run directory in use by pid {pid}" in capsys.readouterr().err
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["auto_resume=false"], True),
        (["ckpt_path=elsewhere/last.ckpt"], True),
        (["auto_resume=true"], False),
        (["auto_resume=false", "ckpt_path={run}/checkpoints/last.ckpt"], False),
    ],
)
def test_a_finished_run_directory_is_only_trained_into_by_resuming_it(
    tiny_run: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys,
    overrides: list[str],
    refused: bool,
) -> None:
    from helpers import compose, snapshot

    from brainseg.hydra_callbacks import RefuseOutputDirectory

    run = tmp_path / "run"  # its own copy: claiming it writes a lock file there
    shutil.copytree(tiny_run, run)
    before = snapshot(run)
    overrides = [o.format(run=run) for o in overrides]
    config = compose([f"hydra.run.dir={run}", f"data.root={synthetic_root}", *overrides])
    try:
        if refused:  # before: a second run replaced its checkpoints, metrics and config
            with pytest.raises(SystemExit) as info:
                RefuseOutputDirectory().on_run_start(config)
            assert info.value.code == 2
            (line,) = capsys.readouterr().err.splitlines()
            assert line.startswith(f"error: {run}: holds a run ("), line
        else:
            RefuseOutputDirectory().on_run_start(config)
    finally:
        release_run_directory(run)
    assert snapshot(run) == before


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path: Path, capsys) -> None:
    from omegaconf import OmegaConf

    from brainseg.hydra_callbacks import RefuseOutputDirectory

    (tmp_path / "file").write_text("")
    run = tmp_path / "file" / "run"  # as unwritable as a read-only folder, also for root
    with pytest.raises(SystemExit) as info:  # before: a traceback
        RefuseOutputDirectory().on_run_start(
            OmegaConf.create({"hydra": {"run": {"dir": str(run)}}})
        )
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {run}: cannot write there (Not a directory)"
    ]
