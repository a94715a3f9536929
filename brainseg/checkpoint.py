"""Checkpoint files: the provenance record train.py stores in every checkpoint and predict.py reads
back, reading a file with a one-line error naming it, loading its weights, and atomic writes.

A neutral home (no Lightning, no training code) so that prediction can load checkpoints without
importing the trainer, and train.py's resume checks use the same code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainseg.errors import DataError

CHECKPOINT_KEY = "brainseg"
# What predict.py needs from a best checkpoint; everything else (optimizer, loops, callbacks) is
# resume state.
PREDICTION_KEYS = (
    "state_dict",
    "hyper_parameters",
    CHECKPOINT_KEY,
    "epoch",
    "global_step",
    "pytorch-lightning_version",
)


@dataclass(frozen=True)
class Provenance:
    """What a checkpoint was trained on: resolved config, data root, preprocessing, split; and,
    once decided after training, the post-processing steps to apply to its predictions
    (brainseg.postprocessing.records.provenance_record)."""

    config: dict[str, Any]
    data_root: str | None
    preprocess: dict[str, Any]
    split: dict[str, list[str]] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None

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
            postprocessing=info.get("postprocessing"),
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A brainseg training checkpoint as a dict; a missing, truncated,
    foreign or text file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for foreign files
        raise DataError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})"
        ) from None
    Provenance.read(checkpoint, path)
    if "hyper_parameters" not in checkpoint:
        raise DataError(f"{path}: not a brainseg checkpoint (made by train.py)")
    return checkpoint


def load_weights(
    module: nn.Module, state_dict: dict[str, Any], path: str | Path, model: dict[str, Any]
) -> None:
    """Load weights, naming the file and the model when they do not fit (another architecture)."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            f"{path}: weights do not fit model "
            f"{model.get('arch')}/{model.get('encoder_name')} ({first})"
        ) from None


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary name, then rename:
    a crash mid-write never replaces a good file by a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)


def record_postprocessing(path: str | Path, record: dict[str, Any]) -> None:
    """Store a post-processing decision in the provenance of a checkpoint file (rewritten
    atomically)."""
    checkpoint = read_checkpoint(path)
    checkpoint[CHECKPOINT_KEY] = {**checkpoint[CHECKPOINT_KEY], "postprocessing": record}
    save_atomically(checkpoint, path)


def prediction_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The part of a training checkpoint that predict.py uses (weights and provenance,
    no optimizer state)."""
    return {key: checkpoint[key] for key in PREDICTION_KEYS if key in checkpoint}
