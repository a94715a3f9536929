"""Entry-point plumbing: user errors become one line on stderr; in a sweep, a failing job is
recorded in its directory and the sweep goes on, a mistake every job shares stops the sweep before
its first job, and a sweep with failed jobs exits non-zero."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import brainseg.config  # noqa: F401  (registers the resolvers conf/ uses before Hydra composes)
from brainseg.errors import BrainsegError, ConfigError
from brainseg.runfiles import Failure, write_failure

log = logging.getLogger("brainseg")
# The override keys a running sweep varies (comma-separated), set for its jobs by SweepGuard.
SWEPT_KEYS_ENV = "BRAINSEG_SWEPT_KEYS"


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

    Inside a multirun, any failure is logged with the job's number and overrides and written to
    `<job dir>/failure.json`; None is returned so that Hydra's sweeper runs the other jobs and the
    sweep report lists this one as failed. Sweepers with a `max_failure_rate` (Optuna) get the
    exception instead: they mark the trial failed with its real reason and go on.
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
        job = HydraConfig.get().job
        swept, _ = job_overrides()
        log.error(
            "job %s (%s) failed: %s: %s",
            job.num,
            " ".join(swept) or job.override_dirname or "no overrides",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        if not user_error:
            log.error("traceback of job %s:\n%s", job.num, traceback.format_exc())
        job_dir.mkdir(parents=True, exist_ok=True)
        write_failure(job_dir, Failure(str(exc), type(exc).__name__, traceback.format_exc()))
        if "max_failure_rate" in HydraConfig.get().sweeper:
            # A sweeper that tolerates failures (Optuna) records this trial as failed, with this
            # reason.
            raise
        return None


def check_output_outside_data(output_dir: str | Path, data_root: str | Path, setting: str) -> None:
    """The README promises that nothing is ever written under data.root."""
    output, root = Path(output_dir).resolve(), Path(data_root).resolve()
    if output.is_relative_to(root):
        raise ConfigError(
            f"{setting}={str(output)!r} is inside data.root={str(root)!r}; "
            "nothing may be written there"
        )


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
            check_output_outside_data(
                Path.cwd() / str(OmegaConf.select(config, key)), Path.cwd() / str(root), key
            )
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a multirun varies: command-line sweeps (`loss=dice,bce_dice`, `range(...)`) and the
    search space of a sweeper such as Optuna (`hydra.sweeper.params`)."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    keys += [str(k) for k in (config.hydra.sweeper.get("params") or {})]
    return sorted(set(keys))


def job_overrides() -> tuple[list[str], list[str]]:
    """This job's overrides split into (swept, constant): `loss=dice` vs `data.root=...`."""
    if not HydraConfig.initialized():
        return [], []
    overrides = list(HydraConfig.get().overrides.task)
    swept = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return chosen, [o for o in overrides if o not in chosen]


def _touches(keys: list[str], group: str) -> bool:
    return any(k == group or k.startswith((f"{group}.", f"{group}/")) for k in keys)


def preflight(config: DictConfig, swept: list[str]) -> None:
    """Cheap checks of what every job shares (the data root and split, the model's names), so a
    shared mistake stops the sweep once instead of failing each job after a model build. Groups
    that the sweep varies are left to the jobs."""
    from brainseg.config import instantiate_setting, to_plain

    HydraConfig.instance().set_config(
        config
    )  # for ${hydra:...} in the checked settings, as in a job
    if "data" in config and not _touches(swept, "data"):
        instantiate_setting("data", config.data).validate()
    if "model" in config and not _touches(swept, "model"):
        from brainseg.models import build_model

        build_model(**to_plain(config.model))


class SweepGuard(Callback):
    """Hydra callback around a multirun: pre-flight checks before the first job; at the end (after
    the sweep report), exit non-zero with `N of M jobs failed: see <sweep>/summary.md`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.quiet import quiet_libraries

        quiet_libraries()
        swept = swept_keys(config)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)
        try:
            preflight(config, swept)
        except BrainsegError as exc:
            print(
                f"error: {exc} (checked before the sweep started; no job was run)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.reporting.sweep import collect_jobs

        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir) if sweep_dir.is_dir() else []
        failed = [j for j in jobs if j["status"] in ("failed", "incomplete")]
        if failed:
            print(
                f"{len(failed)} of {len(jobs)} jobs failed: see {sweep_dir / 'summary.md'}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
