"""Hydra callbacks of train.py and predict.py: a run or sweep directory inside data.root is refused
before Hydra creates it; a mistake every sweep job shares stops the sweep before its first job, and
a sweep with failed jobs exits non-zero."""

from __future__ import annotations

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


def _touches(keys: list[str], group: str) -> bool:
    return any(k == group or k.startswith((f"{group}.", f"{group}/")) for k in keys)


def preflight(config: DictConfig, swept: list[str]) -> None:
    """Cheap checks of what every job shares (the data root and split, the model's names), so a
    shared mistake stops the sweep once instead of failing each job after a model build. Groups
    that the sweep varies are left to the jobs."""
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
