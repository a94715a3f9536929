"""Entry-point plumbing: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from brainseg.errors import BrainsegError

log = logging.getLogger("brainseg")


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a Hydra task; a BrainsegError is printed as `error: <message>` instead of a traceback."""
    try:
        return task(cfg)
    except BrainsegError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
