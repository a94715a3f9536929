"""Entry-point plumbing: user errors become one line on stderr; in a sweep, a failing job is
recorded in its directory and the sweep goes on."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from brainseg.config import in_multirun, job_overrides  # also registers conf/'s resolvers
from brainseg.errors import BrainsegError
from brainseg.runfiles import FAILURE_FILE, Failure, write_failure

log = logging.getLogger("brainseg")


class Stopped(Exception):
    """Stopped by SIGTERM or SIGINT: the process exits 128 + the signal's number (143, 130)."""

    def __init__(self, signum: int, resume: str = "") -> None:
        self.signum, self.exit_status = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (resume and f"; {resume}"))


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise Stopped, unless a launcher (submitit) handles them itself."""
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    previous = {s: signal.signal(s, _stop) for s, h in defaults.items() if signal.getsignal(s) is h}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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

    A run or job that fails after its directory exists is marked by `<dir>/failure.json` (removed
    when a later attempt there succeeds), so a failed start never looks like a run. In a multirun
    the failure is logged and None lets the sweeper run the other jobs; a sweeper with a
    `max_failure_rate` (Optuna) gets the exception, to record the trial's reason. SIGTERM/SIGINT:
    exit 143/130; a sweep ends after the job's report.
    """
    output_dir = OmegaConf.select(cfg, "paths.output_dir") if cfg is not None else None
    run_dir = Path(output_dir) if output_dir else None  # predict.py has no run directory
    sweep_job = in_multirun()
    try:
        with _stop_on_signals():
            result = task(cfg)
    except Stopped as stop:
        _mark_failed(run_dir, stop)
        if not sweep_job:
            print(f"error: {stop}", file=sys.stderr, flush=True)
            raise SystemExit(stop.exit_status) from None
        raise  # Hydra records the job as failed, then SweepGuard.on_job_end stops the sweep
    except Exception as exc:
        user_error = isinstance(exc, BrainsegError)
        if user_error:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        _mark_failed(run_dir, exc)
        if not sweep_job:
            if user_error:
                raise SystemExit(2) from None
            raise
        job = HydraConfig.get().job
        log.error(
            "job %s (%s) failed: %s: %s",
            job.num,
            " ".join(job_overrides()[0]) or job.override_dirname or "no overrides",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        if not user_error:
            log.error("traceback of job %s:\n%s", job.num, traceback.format_exc())
        if "max_failure_rate" in HydraConfig.get().sweeper:
            raise
        return None
    if run_dir is not None:
        (run_dir / FAILURE_FILE).unlink(missing_ok=True)
    return result


def _mark_failed(run_dir: Path | None, exc: BaseException) -> None:
    """failure.json in a run directory that exists (a start refused before it was made leaves
    nothing)."""
    if run_dir is not None and run_dir.is_dir():
        write_failure(run_dir, Failure(str(exc), type(exc).__name__, traceback.format_exc()))
