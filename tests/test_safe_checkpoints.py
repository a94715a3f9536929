"""Checkpoints are safe to open: a file that would run code when unpickled is refused, unrun, on
every path that reads one (predict.py, `ckpt_path`, auto-resume, Lightning's own reads). Writes
are atomic: a full disk or a kill mid-write keeps the previous file and leaves no partial one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from helpers import PROJECT, compose_run, run_cli

from brainseg.checkpoint import read_checkpoint, remove_temporary_files, save_atomically
from brainseg.errors import DataError
from brainseg.run_lock import claim_run_directory, release_run_directory
from brainseg.training.checkpoints import AtomicCheckpointIO


class _Payload:
    """What an attacker hides in a checkpoint: unpickling it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _with_payload(checkpoint: dict, path: Path, marker: Path) -> Path:
    torch.save({**checkpoint, "payload": _Payload(marker)}, path)
    return path


def _assert_refused_unrun(message: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert message.startswith(f"{path}: refused") and "exec" in message, message
    assert "\n" not in message


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    plain = {"state_dict": {}, "hyper_parameters": {}, "brainseg": {"preprocess": {}}}
    path = _with_payload(plain, tmp_path / "payload.ckpt", marker)
    for read in (read_checkpoint, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(DataError) as raised:  # before: the payload ran and the file loaded
            read(path)
        _assert_refused_unrun(str(raised.value), path, marker)


@pytest.mark.slow
def test_predict_refuses_a_checkpoint_that_would_run_code(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    good = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    path = _with_payload(good, tmp_path / "shared.ckpt", marker)
    result = run_cli(
        "predict.py",
        f"input={synthetic_root}",
        f"checkpoints=[{path}]",
        f"output_dir={tmp_path / 'out'}",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=PROJECT,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]  # before: 0, masks written
    (line,) = errors
    _assert_refused_unrun(line.removeprefix("error: "), path, marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ckpt_path", "auto_resume"])
def test_resume_refuses_a_checkpoint_that_would_run_code(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, how: str
) -> None:
    from brainseg.training.pipeline import train

    marker, run = tmp_path / "marker", tmp_path / "run"
    good = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    if how == "ckpt_path":
        path = _with_payload(good, tmp_path / "shared.ckpt", marker)
        overrides = [f"ckpt_path={path}"]
    else:  # someone replaced the run's last.ckpt
        (run / "checkpoints").mkdir(parents=True)
        path = _with_payload(good, run / "checkpoints" / "last.ckpt", marker)
        overrides = []
    before = path.read_bytes()
    with pytest.raises(DataError) as raised:  # before: the payload ran, then a bare traceback
        train(compose_run(synthetic_root, run, tmp_path / "cache", *overrides))
    _assert_refused_unrun(str(raised.value), path, marker)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_checkpoints_train_py_writes_load_safely(tiny_run: Path) -> None:
    """The project's own best and last checkpoints (optimizer, loops, callbacks) need nothing
    beyond tensors and plain values."""
    paths = sorted((tiny_run / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    for path in paths:
        assert "brainseg" in read_checkpoint(path)


def test_a_full_disk_is_named_and_leaves_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 1}, path)

    def fills_the_disk(obj, f, *args, **kwargs):
        with open(f, "ab") if isinstance(f, (str, Path)) else nullcontext(f) as fh:
            fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(DataError) as raised:  # before: a bare C++ RuntimeError
        save_atomically({"epoch": 2}, path)
    assert str(raised.value) == f"no space left on device writing {path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # before: a partial file
    assert torch.load(path, weights_only=True) == {"epoch": 1}


KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
import torch
from brainseg.checkpoint import save_atomically

def slow_save(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04 partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

torch.save = slow_save
save_atomically({"epoch": 2}, Path(sys.argv[1]))
"""


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = run / "checkpoints" / "last.ckpt"
    save_atomically({"epoch": 1}, path)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(path)], cwd=PROJECT, stdout=subprocess.PIPE
    )
    assert writer.stdout.readline().strip() == b"writing"
    writer.kill()
    writer.wait()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    (partial,) = [p for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert str(writer.pid) in partial.name  # each process writes its own temporary file
    claim_run_directory(run)  # what train.py does first
    remove_temporary_files(path.parent)
    release_run_directory(run)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
