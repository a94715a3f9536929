"""Hydra helpers shared by the entry points: instantiation with one-line errors, the resolvers
conf/ uses, a job's swept keys."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from brainseg.errors import BrainsegError, ConfigError


def to_plain(cfg: Any) -> Any:
    """A resolved, plain-Python copy of a config node (mapping or list); other values as is."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def instantiate_setting(setting: str, cfg: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, turning failures into a ConfigError that names the setting;
    a BrainsegError raised inside the target is passed on unchanged."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, BrainsegError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{setting}: {_reason(exc)}") from None


def _reason(exc: InstantiationException) -> str:
    """Why Hydra could not build a setting, in one line, without its `full_key` lines."""
    located = re.match(r"Error locating target '([^']+)'", str(exc))
    if located:
        return f"cannot import _target_ {located[1]!r}"
    cause = exc.__cause__
    text = str(cause) if cause is not None else str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(cause or exc).__name__


# The override keys a running sweep varies (comma-separated), set for its jobs by SweepGuard.
SWEPT_KEYS_ENV = "BRAINSEG_SWEPT_KEYS"


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


def in_multirun() -> bool:
    """Whether this is a job of a Hydra multirun (a sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_group() -> str | None:
    """`sweep-<sweep dir name>` for the jobs of a multirun; single runs are not grouped."""
    return f"sweep-{Path(HydraConfig.get().sweep.dir).name}" if in_multirun() else None


def _job_name() -> str:
    """What tells this job from the others of its sweep (`loss=dice,model=unet`); for a single run
    all its overrides."""
    if HydraConfig.initialized() and not in_multirun():
        return HydraConfig.get().job.override_dirname or "default"
    return ",".join(job_overrides()[0]) or "default"


def _shared_overrides() -> list[str]:
    """The overrides every job of this multirun shares (W&B tags)."""
    return job_overrides()[1] if in_multirun() else []


def _mode(monitor: str) -> str:
    """`max` or `min`: the direction of `monitor` (imported late: no torch for predict --help)."""
    from brainseg.metrics.monitor import mode

    return mode(monitor)


def _optimisation_direction(monitor: str) -> str:
    return {"max": "maximize", "min": "minimize"}[_mode(monitor)]


def _fresh_dir(path: str) -> str:
    """`path`, or `path-2`, ... when it exists: claimed by creating it, so two sweeps started in
    the same second differ. Cached like Hydra's `now`, so every job resolves the same one."""
    base, suffix = Path(path), 1
    while True:
        candidate = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            suffix += 1


def _gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """SLURM GPUs for a trainer; none for `auto`, which must not queue a CPU job for GPUs."""
    return int(devices) if accelerator in ("gpu", "cuda") else None


OmegaConf.register_new_resolver("brainseg.run_group", _run_group, replace=True)
OmegaConf.register_new_resolver(  # 3 channels per slice of the input stack
    "brainseg.input_channels", lambda context: 3 * (2 * int(context) + 1), replace=True
)
OmegaConf.register_new_resolver("brainseg.job_name", _job_name, replace=True)
OmegaConf.register_new_resolver("brainseg.shared_overrides", _shared_overrides, replace=True)
OmegaConf.register_new_resolver("brainseg.mode", _mode, replace=True)
OmegaConf.register_new_resolver("brainseg.direction", _optimisation_direction, replace=True)
OmegaConf.register_new_resolver("brainseg.fresh_dir", _fresh_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver("brainseg.gpus_per_node", _gpus_per_node, replace=True)
