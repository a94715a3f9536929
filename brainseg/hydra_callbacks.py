"""Hydra callbacks of train.py and predict.py: a run or sweep directory inside data.root, or a run
directory a live train.py holds, is refused before Hydra writes there; a mistake every sweep job
shares stops the sweep before its first job, and a sweep with failed jobs exits non-zero."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from brainseg.cli import check_output_outside_data
from brainseg.config import SWEPT_KEYS_ENV, instantiate_setting, swept_keys, to_plain
from brainseg.errors import BrainsegError, ConfigError
from brainseg.run_lock import check_run_directory_free, is_first_rank


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


class RefuseBusyRunDirectory(Callback):
    """Refuse a run directory held by a live train.py before Hydra writes its .hydra/ files and
    log into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_rank():  # DDP ranks run in rank 0's directory
            return
        try:
            check_run_directory_free(Path.cwd() / str(OmegaConf.select(config, "hydra.run.dir")))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


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
    optimizer, scheduler, post-processing steps, the callbacks' and loggers' targets), so a shared
    mistake stops the sweep once instead of failing every job. Groups that the sweep varies are
    left to the jobs."""
    import torch  # here, after SweepGuard has quieted the libraries

    from brainseg.losses import build_loss
    from brainseg.models import build_model
    from brainseg.postprocessing import check_steps

    def shared(group: str) -> bool:
        return group in config and config[group] is not None and not _touches(swept, group)

    HydraConfig.instance().set_config(
        config
    )  # for ${hydra:...} in the checked settings, as in a job
    if shared("data"):
        instantiate_setting("data", config.data).validate()
    model = build_model(**to_plain(config.model)) if shared("model") else None
    if "trainer" not in config:  # predict.py: its data and model are all that jobs share
        return
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
        failed = [j for j in jobs if j["status"] in ("failed", "interrupted")]
        if failed:
            print(
                f"{len(failed)} of {len(jobs)} jobs failed: see {sweep_dir / 'summary.md'}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
