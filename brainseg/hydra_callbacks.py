"""Hydra callbacks of train.py and predict.py: a run or sweep directory inside data.root, one a
live process holds, or a finished run not resumed, is refused before Hydra writes there; a mistake
every sweep job shares stops the sweep before its first job; failed or stopped jobs: non-zero."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from brainseg.cli import Stopped, check_output_outside_data
from brainseg.config import SWEPT_KEYS_ENV, instantiate_setting, swept_keys, to_plain
from brainseg.errors import BrainsegError, ConfigError
from brainseg.run_lock import claim_run_directory, is_first_rank
from brainseg.runfiles import METRICS_FILE


def _exit(line: str, status: int = 2) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status) from None


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
            _exit(f"error: {exc}")


class RefuseBusyRunDirectory(Callback):
    """Claim the run directory for this process before Hydra writes its .hydra/ files and log into
    it: refused when a live process holds it, or when it holds a run that this start does not
    resume (training into it would replace that run's checkpoints, metrics and config)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_rank():  # DDP ranks run in rank 0's directory
            return
        run_dir = Path.cwd() / str(OmegaConf.select(config, "hydra.run.dir"))
        try:
            claim_run_directory(run_dir)
            if "auto_resume" in config:  # train.py
                _check_resumed(config, run_dir)
        except ConfigError as exc:
            _exit(f"error: {exc}")


def _check_resumed(config: DictConfig, run_dir: Path) -> None:
    """A run directory holding a run is trained into only by resuming it from its last.ckpt."""
    from brainseg.training.pipeline import last_checkpoint

    last, ckpt = last_checkpoint(run_dir), config.get("ckpt_path")
    resumed = (Path.cwd() / ckpt).resolve() == last.resolve() if ckpt else config.auto_resume
    run = next((p for p in [run_dir / METRICS_FILE, *last.parent.glob("*.ckpt")] if p.is_file()), 0)
    if run and not (resumed and last.is_file()):
        raise ConfigError(
            f"{run_dir}: holds a run ({run}); resume it (auto_resume=true, or "
            f"ckpt_path={last}) or choose another hydra.run.dir"
        )


def _touches(keys: list[str], group: str) -> bool:
    return any(k == group or k.startswith((f"{group}.", f"{group}/")) for k in keys)


def _check_targets(group: str, entries: Any) -> None:
    """Each entry's `_target_` of a dict-shaped group (callbacks, logger) can be imported; the
    entries themselves are built by the jobs (they name the job's own directory)."""
    for name, node in (entries or {}).items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            continue
        module, _, attribute = str(target).rpartition(".")
        try:
            found = hasattr(importlib.import_module(module), attribute)
        except (ImportError, ValueError):  # ValueError: an empty module name
            found = False
        if not found:
            raise ConfigError(f"{group}.{name}._target_: cannot import {target!r}")


def _scheduler(config: DictConfig, optimizer: Any) -> None:
    factory = to_plain(config.scheduler).get("scheduler") if config.scheduler else None
    if not factory:
        return
    if "total_steps" in factory and factory["total_steps"] is None:  # the trainer fills it in
        factory["total_steps"] = 1
    instantiate_setting("scheduler", factory, optimizer=optimizer)


def preflight(config: DictConfig, swept: list[str]) -> None:
    """Build what every job shares once, as the first job would (data root and split, model, loss,
    optimizer, scheduler, post-processing steps, the callbacks' and loggers' targets, monitor,
    ckpt_path), so a shared mistake stops the sweep once instead of failing every job. Groups that
    the sweep varies are left to the jobs."""
    import torch  # here, after SweepGuard has quieted the libraries

    from brainseg.losses import build_loss
    from brainseg.metrics.monitor import higher_is_better
    from brainseg.models import build_model
    from brainseg.postprocessing import check_steps
    from brainseg.training.pipeline import checkpoint_file

    def shared(group: str) -> bool:
        return group in config and config[group] is not None and not _touches(swept, group)

    # for ${hydra:...} in the checked settings, as in a job
    HydraConfig.instance().set_config(config)
    if shared("data"):
        instantiate_setting("data", config.data).validate()
    model = build_model(**to_plain(config.model)) if shared("model") else None
    if "trainer" not in config:  # predict.py: its data and model are all that jobs share
        return
    if shared("monitor"):
        higher_is_better(config.monitor)
    if shared("ckpt_path"):
        checkpoint_file(config)
    if shared("loss"):
        build_loss(**to_plain(config.loss))
    if shared("postprocessing"):
        check_steps(to_plain(config.postprocessing))
    params = model.parameters() if model is not None else [torch.nn.Parameter(torch.zeros(1))]
    if shared("optimizer"):
        optimizer = instantiate_setting("optimizer", config.optimizer, params=params)
    else:  # the scheduler is checked on a stand-in for the optimizers the jobs build
        optimizer = torch.optim.SGD(params, lr=0.1)
    if shared("scheduler"):
        _scheduler(config, optimizer)
    for group in ("callbacks", "logger"):
        if shared(group):
            _check_targets(group, config[group])


class SweepGuard(Callback):
    """Hydra callback around a multirun: pre-flight checks before the first job; at the end (after
    the sweep report), exit non-zero with `N of M jobs failed: see <sweep>/summary.md`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.quiet import quiet_libraries

        quiet_libraries()
        swept = swept_keys(config)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)
        try:
            claim_run_directory(Path.cwd() / str(config.hydra.sweep.dir))
            preflight(config, swept)
        except BrainsegError as exc:
            _exit(f"error: {exc} (checked before the sweep started; no job was run)")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """A job stopped by SIGTERM or SIGINT stops the sweep, after SweepReport's on_job_end."""
        stop = job_return._return_value  # the public property re-raises a failed job's error
        if isinstance(stop, Stopped):
            summary = Path(config.hydra.sweep.dir) / "summary.md"
            _exit(
                f"error: job {config.hydra.job.num} {stop}; the jobs run so far: {summary}",
                stop.exit_status,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.reporting.sweep import collect_jobs

        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir) if sweep_dir.is_dir() else []
        failed = [j for j in jobs if j["status"] in ("failed", "incomplete")]
        if failed:
            _exit(f"{len(failed)} of {len(jobs)} jobs failed: see {sweep_dir / 'summary.md'}", 1)
