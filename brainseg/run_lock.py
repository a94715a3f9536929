"""One live process per folder it writes: two train.py runs writing one run directory would mix
their checkpoints, CSV rows and logs; two predict.py (or `brainseg.evaluate`) runs into one output
folder would leave one's masks beside the other's scores.

`<run dir>/.lock` holds the owner's pid and host and an OS lock (flock) held for the life of the
process: the OS releases it when the owner exits or dies, so a lock file left by a killed run is
stale and simply taken over, on any host that shares the folder.

train.py takes the lock before its first write; a Hydra callback (RefuseOutputDirectory) checks
it even earlier, before Hydra writes the run's `.hydra/` files and log, so a refused start leaves
the running one's files untouched. predict.py and `brainseg.evaluate` claim their output folder
(`claim_output_dir`) the same way, for the rest of the process.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from brainseg.errors import ConfigError
from brainseg.paths import check_outside_inputs

log = logging.getLogger("brainseg")
LOCK_NAME = ".lock"


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


def _open_locked(path: Path, what: str = "run directory", hint: str = "hydra.run.dir") -> int:
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


@contextmanager
def own_run_directory(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process; refuse it when another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = _open_locked(path)
    if os.fstat(fd).st_size:
        log.info("%s: taking over the lock of %s, which is no longer running", path, _owner(path))
    try:
        _sign(fd)
        yield
    finally:
        _release(path, fd)


def _sign(fd: int) -> None:
    """Write this process's pid and host into a held lock file (named in refusals)."""
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())


def _release(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)
    os.close(fd)


_CLAIMED: dict[Path, int] = {}  # output folder -> the held descriptor of its lock file


@atexit.register
def _release_claims() -> None:
    while _CLAIMED:
        folder, fd = _CLAIMED.popitem()
        _release(folder / LOCK_NAME, fd)


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
    folder.mkdir(parents=True, exist_ok=True)
    if folder not in _CLAIMED:
        _CLAIMED[folder] = _open_locked(folder / LOCK_NAME, "output folder", setting)
        _sign(_CLAIMED[folder])
    if not overwrite and any(entry.name != LOCK_NAME for entry in folder.iterdir()):
        allow = "--overwrite" if setting.startswith("--") else "overwrite=true"
        raise ConfigError(
            f"{setting}={str(folder)!r} is not empty; choose another folder or set {allow}"
        )
    return folder


def check_run_directory_free(run_dir: Path) -> None:
    """A ConfigError naming the owner if a live process holds `run_dir` (nothing is created)."""
    path = run_dir / LOCK_NAME
    if path.is_file():
        os.close(_open_locked(path))
