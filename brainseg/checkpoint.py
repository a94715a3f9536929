"""Checkpoint files: the provenance record train.py stores in every checkpoint and predict.py reads
back, reading a file with a one-line error naming it, loading its weights, and atomic writes.

A neutral home (no Lightning, no training code) so that prediction can load checkpoints without
importing the trainer, and train.py's resume checks use the same code.

Safe to open: every read unpickles with `weights_only=True`, so a checkpoint can hold tensors and
plain values (dicts, lists, strings, numbers) only. A file that needs anything else to load (a
class, a function: what a pickle payload uses to run code) is refused without running it.
"""

from __future__ import annotations

import errno
import os
import pickle
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


# Each field of the provenance record: the type a file must hold there.
RECORD_FIELDS: dict[str, tuple[Any, str]] = {
    "config": (dict, "a mapping"),
    "data_root": (str | None, "a path or null"),
    "preprocess": (dict, "a mapping"),
    "split": (dict, "a mapping"),
    "postprocessing": (dict | None, "a mapping or null"),
    "calibration": (dict | None, "a mapping or null"),
}


@dataclass(frozen=True)
class Provenance:
    """What a checkpoint was trained on: resolved config, data root, preprocessing, split; and,
    once decided after training, the post-processing steps to apply to its predictions
    (brainseg.postprocessing.records.decide_run) and the temperature that calibrates its
    probabilities (brainseg.training.final_validation.calibrate)."""

    config: dict[str, Any]
    data_root: str | None
    preprocess: dict[str, Any]
    split: dict[str, list[str]] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None

    def store(self, checkpoint: dict[str, Any]) -> None:
        """Add the record to a checkpoint dict (Lightning's `on_save_checkpoint`)."""
        checkpoint[CHECKPOINT_KEY] = asdict(self)

    @classmethod
    def read(cls, checkpoint: Mapping[str, Any], path: str | Path) -> Provenance:
        """The record of a loaded checkpoint; a one-line DataError naming `path` if it has none."""
        info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, Mapping) else None
        if not isinstance(info, Mapping) or "preprocess" not in info:
            raise DataError(f"{path}: not a brainseg checkpoint (made by train.py)")
        defaults = {"config": {}, "split": {}}
        fields = {key: info.get(key, defaults.get(key)) for key in RECORD_FIELDS}
        for key, (kind, described) in RECORD_FIELDS.items():
            if not isinstance(fields[key], kind):
                raise DataError(f"{path}: provenance {key} is not {described}")
        return cls(**fields)


def _refused_global(path: str | Path) -> str | None:
    """The first class or function the file needs beyond tensors and plain values
    (`builtins.exec`, `posix.system`), found by torch without running anything."""
    try:
        return next(iter(torch.serialization.get_unsafe_globals_in_checkpoint(path)), None)
    except Exception:  # noqa: BLE001 - a pickle torch cannot parse names no global
        return None


def load_safely(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load` restricted to tensors and plain values; a file that needs more (a pickle that
    would run code) or is no PyTorch file is a DataError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for foreign files
        needed = _refused_global(path) if isinstance(exc, pickle.UnpicklingError) else None
        if needed is not None:
            raise DataError(
                f"{path}: refused: loading it needs {needed}, which could run code "
                "(a checkpoint may hold only tensors and plain values)"
            ) from None
        error = type(exc).__name__
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({error})") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A brainseg training checkpoint as a dict; a missing, truncated, foreign or text file, or
    one that could run code, is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    checkpoint = load_safely(path)
    Provenance.read(checkpoint, path)
    if not all(isinstance(checkpoint.get(k), Mapping) for k in ("hyper_parameters", "state_dict")):
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


TEMPORARY_SUFFIX = ".tmp"


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary name unique to this process, then rename: a crash mid-write never
    replaces a good file by a torn one. A failed write removes its partial file; a full disk is
    a DataError naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as fh:
            torch.save(checkpoint, fh)
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        # torch's archive writer reports a write the disk refused as a C++ enforce failure.
        torn = isinstance(exc, RuntimeError) and "inline_container.cc" in str(exc)
        if torn or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
            raise DataError(f"no space left on device writing {path}") from None
        raise


def remove_temporary_files(folder: Path) -> None:
    """Partial checkpoints left in `folder` by a process killed mid-write (call only while owning
    the run directory: no other process writes there)."""
    for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        path.unlink(missing_ok=True)


def record_decisions(path: str | Path, records: dict[str, Any]) -> None:
    """Store the decisions made after training (`postprocessing`, `calibration`) in the
    provenance of a checkpoint file, in one atomic rewrite."""
    checkpoint = read_checkpoint(path)
    checkpoint[CHECKPOINT_KEY] = {**checkpoint[CHECKPOINT_KEY], **records}
    save_atomically(checkpoint, path)


def prediction_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The part of a training checkpoint that predict.py uses (weights and provenance,
    no optimizer state)."""
    return {key: checkpoint[key] for key in PREDICTION_KEYS if key in checkpoint}
