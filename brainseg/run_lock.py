"""One live train.py per run directory: two runs writing one folder would mix their checkpoints,
CSV rows and logs.

`<run dir>/.lock` holds the owner's pid and host and an OS lock (flock) held for the life of the
process: the OS releases it when the owner exits or dies, so a lock file left by a killed run is
stale and simply taken over, on any host that shares the folder.

A Hydra callback (RefuseBusyRunDirectory, SweepGuard) claims the run or sweep directory before
Hydra writes its `.hydra/` files and log, held until the process exits, so a refused start leaves
the running one's files untouched; train.py's claim finds it held already (a second flock of the
same file in one process would refuse it).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from brainseg.errors import ConfigError

log = logging.getLogger("brainseg")
LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # the directories this process holds -> their lock's descriptor


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


def _open_locked(path: Path) -> int:
    """An open descriptor of `path` holding its OS lock, or a ConfigError naming the owner."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{path.parent}: run directory in use by {_owner(path)} "
                f"(lock {path}); wait for it or choose another hydra.run.dir"
            ) from None
        # The owner may have removed the file between our open and our lock: lock the new one.
        if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
            return fd
        os.close(fd)


def claim_run_directory(run_dir: Path) -> bool:
    """Hold `run_dir` until `release_run_directory` or the process's exit; refuse it when another
    live process holds it. False when this process holds it already."""
    if run_dir.resolve() in _held:
        return False
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
    except OSError as exc:  # read-only, or a file in the way
        raise ConfigError(f"{run_dir}: cannot write there ({exc.strerror})") from None
    if os.fstat(fd).st_size:
        log.info("%s: taking over the lock of %s, which is no longer running", path, _owner(path))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    _held[run_dir.resolve()] = fd
    atexit.register(release_run_directory, run_dir)
    return True


def release_run_directory(run_dir: Path) -> None:
    """Give up a directory this process holds (nothing if it holds none)."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)
