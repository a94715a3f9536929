"""Hydra helpers shared by the entry points: instantiation with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from brainseg.errors import BrainsegError, ConfigError


def to_plain(cfg: DictConfig | Mapping[str, Any] | None) -> Any:
    """A resolved, plain-Python copy of a config node."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if cfg is not None else None


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
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise ConfigError(f"{setting}: {lines[-1] if lines else type(exc).__name__}") from None
