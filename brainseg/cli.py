"""Entry-point plumbing: user errors become one line on stderr; in a sweep, a failing job is
recorded in its directory and the sweep goes on."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from brainseg.errors import BrainsegError, ConfigError

log = logging.getLogger("brainseg")
FAILURE_FILE = "failure.json"


def _multirun_dir() -> Path | None:
    """The job's output directory when running inside a Hydra multirun, else None."""
    if not HydraConfig.initialized():
        return None
    config = HydraConfig.get()
    return Path(config.runtime.output_dir) if config.mode == RunMode.MULTIRUN else None


def exit_status(entry: Callable[..., Any], *args: Any) -> int:
    """Run a plain (argparse) entry point: 0, or 2 with `error: <message>` for a BrainsegError."""
    try:
        entry(*args)
    except BrainsegError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a Hydra task; a BrainsegError is printed as `error: <message>` instead of a traceback.

    Inside a multirun, any failure is written to `<job dir>/failure.json` and None is returned,
    so that the other jobs still run and the sweep report can list this one as failed.
    """
    job_dir = _multirun_dir()
    try:
        return task(cfg)
    except Exception as exc:
        user_error = isinstance(exc, BrainsegError)
        if user_error:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        if job_dir is None:
            if user_error:
                raise SystemExit(2) from None
            raise
        if not user_error:
            log.exception("job failed")
        job_dir.mkdir(parents=True, exist_ok=True)
        failure = {"error": str(exc), "type": type(exc).__name__, "traceback": traceback.format_exc()}
        (job_dir / FAILURE_FILE).write_text(json.dumps(failure, indent=2))
        return None



def check_output_outside_data(output_dir: str | Path, data_root: str | Path, setting: str) -> None:
    """The README promises that nothing is ever written under data.root."""
    output, root = Path(output_dir).resolve(), Path(data_root).resolve()
    if output.is_relative_to(root):
        raise ConfigError(f"{setting}={str(output)!r} is inside data.root={str(root)!r}; nothing may be written there")


class RefuseOutputInsideData(Callback):
    """Refuse a run or sweep directory inside data.root before Hydra creates it (and writes its
    .hydra/ files and log there)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        root = OmegaConf.select(config, "data.root")
        if root is None:
            return
        try:
            check_output_outside_data(Path.cwd() / str(OmegaConf.select(config, key)), Path.cwd() / str(root), key)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
