"""A weighted sum of loss terms on logits. A term is a short name (an alias of an smp loss) with a
weight, or a mapping with any `_target_` (a callable returning `loss(logits, target)`) and
`weight`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from brainseg.config import instantiate_setting
from brainseg.errors import ConfigError

_SMP = "segmentation_models_pytorch.losses."
# Short names usable as loss.terms keys: each stands for a `_target_` config.
ALIASES: dict[str, dict[str, Any]] = {
    "dice": {"_target_": _SMP + "DiceLoss", "mode": "binary"},
    "bce": {"_target_": _SMP + "SoftBCEWithLogitsLoss"},
    "jaccard": {"_target_": _SMP + "JaccardLoss", "mode": "binary"},
    "focal": {"_target_": _SMP + "FocalLoss", "mode": "binary"},
    "tversky": {"_target_": _SMP + "TverskyLoss", "mode": "binary"},
    "lovasz": {"_target_": _SMP + "LovaszLoss", "mode": "binary"},
}


class CombinedLoss(nn.Module):
    """Weighted sum of named losses, always evaluated in fp32 (also under autocast)."""

    def __init__(self, terms: Mapping[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict({name: module for name, (module, _) in terms.items()})
        self.weights = {name: float(weight) for name, (_, weight) in terms.items()}

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each unweighted term, for logging."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = logits.float(), target.float()
            return {name: term(logits, target) for name, term in self.terms.items()}

    def combine(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `components`' output."""
        return sum(self.weights[name] * value for name, value in parts.items())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.combine(self.components(logits, target))


def _term(
    name: str, spec: float | Mapping[str, Any], options: Mapping[str, Any]
) -> tuple[nn.Module, float]:
    """One term's module and weight, from `name: weight` (a short name, with its `options`) or
    `name: {_target_, weight, ...}`."""
    if isinstance(spec, Mapping):
        settings = dict(spec)
        weight = float(settings.pop("weight", 1.0))
    else:
        settings, weight = dict(options.get(name) or {}), float(spec)
    if "_target_" not in settings:
        if name not in ALIASES:
            raise ConfigError(
                f"loss {name!r} is unknown; choose from {sorted(ALIASES)} or give a _target_"
            )
        settings = {**ALIASES[name], **settings}
    return instantiate_setting(f"loss.terms.{name}", settings), weight


def build_loss(
    terms: Mapping[str, float | Mapping[str, Any]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CombinedLoss:
    """`terms` maps names to weights (e.g. {bce: 0.5, dice: 0.5}) or to `_target_` configs with a
    `weight`; `options` holds keyword arguments of short-named terms ({tversky: {alpha: 0.3}})."""
    options = dict(options or {})
    if not terms:
        raise ConfigError(
            f"loss.terms is empty; give at least one of {sorted(ALIASES)} with a weight"
        )
    unknown = sorted(set(options) - set(terms))
    if unknown:
        raise ConfigError(f"loss.options.{unknown[0]}: no such term in loss.terms {sorted(terms)}")
    return CombinedLoss({name: _term(name, spec, options) for name, spec in terms.items()})
