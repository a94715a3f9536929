"""Paths a user gives (data root, input, output folder): resolved with a one-line error naming
the setting, e.g. for a symbolic link that points back to itself; an output that overlaps an input
refused; text files written whole or not at all."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from brainseg.errors import ConfigError


def resolve_path(path: str | Path, setting: str) -> Path:
    """`Path(path).resolve()`; a symlink loop (or another unresolvable path) is a ConfigError
    naming `setting` and the path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError before Python 3.13, OSError since
        loop = isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP
        reason = "symlink loop" if loop else exc.strerror or type(exc).__name__
        raise ConfigError(f"{setting}={str(path)!r}: cannot resolve the path ({reason})") from None


def check_outside_inputs(
    output: str | Path, setting: str, inputs: Mapping[str, str | Path | None]
) -> Path:
    """The resolved output folder; a ConfigError when it overlaps one of `inputs` (setting -> path
    or None) either way, whatever `overwrite` says: nothing is written into the user's inputs."""
    out = resolve_path(output, setting)
    for name, given in inputs.items():
        if given is None:
            continue
        root = resolve_path(given, name)
        if out.is_relative_to(root) or root.is_relative_to(out):
            raise ConfigError(
                f"{setting}={str(out)!r} overlaps the input {name}={str(root)!r}; "
                "nothing may be written there, choose a folder outside it"
            )
    return out


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text file written to a temporary file beside `path`, renamed over it when complete:
    readers (parallel sweep jobs, a user) see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # permissions as by open()
    try:
        with open(temporary, "w", newline="") as fh:
            yield fh
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
