"""Pluggable losses on logits (combined.py): weighted terms, each a short name or any `_target_`."""

from brainseg.losses.combined import ALIASES, CombinedLoss, build_loss

__all__ = ["ALIASES", "CombinedLoss", "build_loss"]
