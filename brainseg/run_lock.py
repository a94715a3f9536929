"""One live process per folder it writes (docs/safety.md): two runs writing one folder would mix
their files. `<folder>/.lock` holds the owner's pid and host and an OS lock (flock), which the OS
releases when the owner dies: a lock file left by a killed run is simply taken over."""

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
    """Not a DDP rank other than 0 (Lightning, torchrun, srun): those share rank 0's run folder."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _open_locked(path: Path, what: str, hint: str) -> int:
    """An open descriptor of `path` holding its OS lock, or a ConfigError naming the owner and
    `hint`, the setting that chooses another folder."""
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


def claim_run_directory(
    run_dir: Path, hint: str = "hydra.run.dir", what: str = "run directory"
) -> bool:
    """Hold a folder until `release_run_directory` or the process's exit; refuse it when another
    live process holds it. False when this process holds it already (claimed by a Hydra callback
    before Hydra wrote its files: a second flock in one process would refuse it)."""
    folder = Path(run_dir).resolve()
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


def claim_output_dir(
    output: str | Path | None,
    setting: str,
    inputs: Mapping[str, str | Path | None],
    overwrite: bool = False,
) -> Path:
    """The output folder, created and held by this process until it exits; a ConfigError for one
    that overlaps an input, is a file, holds files (unless `overwrite`) or is held by another."""
    if output is None:
        raise ConfigError(f"{setting} is required (a new or empty folder)")
    folder = check_outside_inputs(output, setting, inputs)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{setting}={str(folder)!r} is a file; choose a folder")
    claim_run_directory(folder, setting, "output folder")
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
