"""Post-processing as data (the nnU-Net habit): a step list such as
`[{"name": "largest_component"}, {"name": "remove_small_components", "min_voxels": 10}]` is
validated, recorded and applied to binary 3-D masks; `score` is the one scoring of a patient."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from brainseg.errors import ConfigError
from brainseg.metrics import NSD_TOLERANCE, volume_metrics
from brainseg.postprocessing.steps import STEPS
from brainseg.runfiles import VOLUME_COLUMNS

StepList = list[dict[str, Any]]
_EMPTY = np.zeros((1, 1, 1), dtype=bool)


def check_steps(
    steps: Sequence[Mapping[str, Any] | str] | None,
    setting: str = "postprocessing",
    error: type[Exception] = ConfigError,
) -> StepList:
    """The steps as plain `{"name": ..., **arguments}` dicts, or an `error` naming `setting` (a
    DataError where a file recorded them)."""
    if steps is not None and not isinstance(steps, list | tuple):
        example = "[] or [{name: largest_component}]"
        raise error(f"{setting}={steps!r} must be a step list, e.g. {example}")
    checked = []
    for index, item in enumerate(steps or []):
        if not isinstance(item, (str, Mapping)):
            raise error(f"{setting}[{index}]: {item!r} is not a step (a name or a mapping)")
        entry = {"name": item} if isinstance(item, str) else dict(item)
        name = entry.pop("name", None)
        if name not in STEPS:
            raise error(f"{setting}[{index}]: unknown step {name!r}; choose one of {sorted(STEPS)}")
        try:
            inspect.signature(STEPS[name]).bind(None, **entry)
            STEPS[name](_EMPTY, **entry)  # the step checks the values of its arguments
        except (TypeError, ValueError) as exc:
            raise error(f"{setting}[{index}] ({name}): {exc}") from None
        checked.append({"name": name, **entry})
    return checked


def parse_yaml(text: str, setting: str) -> Any:
    """A command-line value written as YAML/JSON, or a ConfigError naming `setting`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{setting}: not YAML/JSON ({str(exc).splitlines()[0]})") from None


def apply(mask: np.ndarray, steps: Sequence[Mapping[str, Any] | str] | None) -> np.ndarray:
    """`mask` (boolean) after each step in order; no steps returns it unchanged."""
    result = np.asarray(mask, dtype=bool)
    for entry in check_steps(steps):
        arguments = {k: v for k, v in entry.items() if k != "name"}
        result = STEPS[entry["name"]](result, **arguments)
    return result


def score(
    mask: np.ndarray,
    truth: np.ndarray,
    steps: Sequence[Mapping[str, Any] | str] | None = None,
    tolerance: float = NSD_TOLERANCE,
) -> dict[str, float]:
    """Every per-volume metric and the voxel counts of one patient's mask after `steps` against its
    truth (original geometry): the one scoring of every figure, so that all of them agree."""
    truth = np.asarray(truth, dtype=bool)
    scored = apply(mask, steps)
    counts = (int(truth.sum()), int(scored.sum()), int(truth.shape[0]))
    return {**volume_metrics(scored, truth, tolerance), **dict(zip(VOLUME_COLUMNS, counts))}
