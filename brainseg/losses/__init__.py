"""Pluggable losses on logits: named smp/torch losses combined with weights from config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from brainseg.errors import ConfigError

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": lambda **kw: smp.losses.DiceLoss("binary", **kw),
    "bce": lambda **kw: smp.losses.SoftBCEWithLogitsLoss(**kw),
    "jaccard": lambda **kw: smp.losses.JaccardLoss("binary", **kw),
    "focal": lambda **kw: smp.losses.FocalLoss("binary", **kw),
    "tversky": lambda **kw: smp.losses.TverskyLoss("binary", **kw),
    "lovasz": lambda **kw: smp.losses.LovaszLoss("binary", **kw),
}


class CombinedLoss(nn.Module):
    """Weighted sum of named losses, always evaluated in fp32 (also under autocast)."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights[name]) for name in terms}

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


def build_loss(terms: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None) -> CombinedLoss:
    """`terms` maps loss names to weights (e.g. {bce: 0.5, dice: 0.5}); `options` holds per-loss kwargs."""
    options = dict(options or {})
    if not terms:
        raise ConfigError(f"loss.terms is empty; give at least one of {sorted(LOSSES)} with a weight")
    for name in list(terms) + list(options):
        if name not in LOSSES:
            raise ConfigError(f"loss {name!r} is unknown; choose from {sorted(LOSSES)}")
    modules = {}
    for name in terms:
        try:
            modules[name] = LOSSES[name](**dict(options.get(name) or {}))
        except TypeError as exc:
            raise ConfigError(f"loss.options.{name}: {exc}") from None
    return CombinedLoss(modules, terms)
