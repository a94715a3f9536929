"""One live process per folder it writes: two train.py runs writing one run directory would mix
their checkpoints, CSV rows and logs; two predict.py (or `brainseg.evaluate`) runs into one output
folder would leave one's masks beside the other's scores.

`<folder>/.lock` holds the owner's pid and host and an OS lock (flock) held until the owner
releases it or exits: the OS releases it when the owner dies, so a lock file left by a killed run
is stale and simply taken over, on any host that shares the folder.

A Hydra callback (RefuseOutputDirectory, SweepGuard) claims the run or sweep directory before
Hydra writes its `.hydra/` files and log, so a refused start leaves the running one's files
untouched; train.py's claim finds it held already (a second flock of the same file in one process
would refuse it). predict.py and `brainseg.evaluate` claim their output folder the same way.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from brainseg.errors import ConfigError
from brainseg.paths import check_outside_inputs

log = logging.getLogger("brainseg")
LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # the folders this process holds -> their lock's descriptor


def is_first_rank() -> bool:
    """Not a DDP rank started for a run by Lightning, torchrun or srun: those share the run
    directory of rank 0, which owns it."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _open_locked(path: Path, what: str, hint: str) -> int:
    """An open descriptor of `path` holding its OS lock, or a ConfigError naming the owner (`what`
    the folder is, `hint` the setting that chooses another)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{path.parent}: {what} in use by {_owner(path)} "
                f"(lock {path}); wait for it or choose another {hint}"
            ) from None
        # The owner may have removed the file between our open and our lock: lock the new one.
        if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
            return fd
        os.close(fd)


def _claim(folder: Path, what: str, hint: str) -> bool:
    """Hold `folder` until `release` or the process's exit; refuse it when another live process
    holds it. False when this process holds it already."""
    folder = folder.resolve()
    if folder in _held:
        return False
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, what, hint)
    except OSError as exc:  # read-only, or a file in the way
        raise ConfigError(f"{folder}: cannot write there ({exc.strerror})") from None
    if os.fstat(fd).st_size:
        log.info("%s: taking over the lock of %s, which is no longer running", path, _owner(path))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    _held[folder] = fd
    return True


def release_run_directory(folder: Path) -> None:
    """Give up a folder this process holds (nothing if it holds none)."""
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is not None:
        (Path(folder) / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        release_run_directory(folder)


def claim_run_directory(run_dir: Path, hint: str = "hydra.run.dir") -> bool:
    """Hold a run or sweep directory (see `_claim`)."""
    return _claim(Path(run_dir), "run directory", hint)


def claim_output_dir(
    output: str | Path | None,
    setting: str,
    inputs: Mapping[str, str | Path | None],
    overwrite: bool = False,
) -> Path:
    """The output folder, created and held by this process until it exits; a ConfigError for a
    folder that overlaps one of `inputs` (brainseg.paths.check_outside_inputs), a file, a folder
    with files in it unless `overwrite`, or a folder another live process holds. The OS lock makes
    the claim atomic: of two runs started into one folder, one is refused."""
    if output is None:
        raise ConfigError(f"{setting} is required (a new or empty folder)")
    folder = check_outside_inputs(output, setting, inputs)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{setting}={str(folder)!r} is a file; choose a folder")
    _claim(folder, "output folder", setting)
    if not overwrite and any(entry.name != LOCK_NAME for entry in folder.iterdir()):
        allow = "--overwrite" if setting.startswith("--") else "overwrite=true"
        raise ConfigError(
            f"{setting}={str(folder)!r} is not empty; choose another folder or set {allow}"
        )
    return folder


def check_run_directory_free(run_dir: Path) -> None:
    """A ConfigError naming the owner if another live process holds `run_dir` (nothing created)."""
    path = Path(run_dir) / LOCK_NAME
    if path.is_file() and Path(run_dir).resolve() not in _held:
        os.close(_open_locked(path, "run directory", "hydra.run.dir"))
