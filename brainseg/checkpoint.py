"""Checkpoint provenance: the record train.py stores in every checkpoint and predict.py reads back.

A neutral home (no Lightning, no training code) so that prediction can load checkpoints without
importing the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brainseg.errors import DataError

CHECKPOINT_KEY = "brainseg"


@dataclass(frozen=True)
class Provenance:
    """What a checkpoint was trained on: resolved config, data root, preprocessing, split."""

    config: dict[str, Any]
    data_root: str | None
    preprocess: dict[str, Any]
    split: dict[str, list[str]] = field(default_factory=dict)

    def store(self, checkpoint: dict[str, Any]) -> None:
        """Add the record to a checkpoint dict (Lightning's `on_save_checkpoint`)."""
        checkpoint[CHECKPOINT_KEY] = asdict(self)

    @classmethod
    def read(cls, checkpoint: Mapping[str, Any], path: str | Path) -> Provenance:
        """The record of a loaded checkpoint; a one-line DataError naming `path` if it has none."""
        info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, Mapping) else None
        if not isinstance(info, Mapping) or "preprocess" not in info:
            raise DataError(f"{path}: not a brainseg checkpoint (made by train.py)")
        return cls(
            config=dict(info.get("config") or {}),
            data_root=info.get("data_root"),
            preprocess=dict(info["preprocess"]),
            split=dict(info.get("split") or {}),
        )
