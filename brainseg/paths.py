"""Paths a user gives (data root, input, output folder): resolved with a one-line error naming
the setting, e.g. for a symbolic link that points back to itself."""

from __future__ import annotations

import errno
from pathlib import Path

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
