"""Post-processing as data (the nnU-Net habit): a step list such as
`[{"name": "largest_component"}, {"name": "remove_small_components", "min_voxels": 10}]`
is validated, recorded and applied to binary 3-D masks. Add a step in steps.py with `@step`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from brainseg.errors import ConfigError
from brainseg.postprocessing.steps import (
    STEPS,
    fill_holes,
    largest_component,
    remove_small_components,
    step,
)

__all__ = [
    "STEPS",
    "apply",
    "check_steps",
    "fill_holes",
    "largest_component",
    "remove_small_components",
    "step",
]

StepList = list[dict[str, Any]]
_EMPTY = np.zeros((1, 1, 1), dtype=bool)


def check_steps(
    steps: Sequence[Mapping[str, Any] | str] | None, setting: str = "postprocessing"
) -> StepList:
    """The steps as plain `{"name": ..., **arguments}` dicts (a bare name: no arguments);
    a one-line ConfigError naming `setting` for unknown names, arguments or argument values."""
    checked = []
    if isinstance(steps, (str, Mapping)):  # would be read letter by letter, or key by key
        raise ConfigError(f"{setting}: a list of steps, not {steps!r}")
    for index, item in enumerate(steps or []):
        if not isinstance(item, (str, Mapping)):
            raise ConfigError(f"{setting}[{index}]: {item!r} is not a step (a name or a mapping)")
        entry = {"name": item} if isinstance(item, str) else dict(item)
        name = entry.pop("name", None)
        if name not in STEPS:
            raise ConfigError(
                f"{setting}[{index}]: unknown step {name!r}; choose one of {sorted(STEPS)}"
            )
        try:
            inspect.signature(STEPS[name]).bind(None, **entry)
            STEPS[name](_EMPTY, **entry)  # the step checks the values of its arguments
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{setting}[{index}] ({name}): {exc}") from None
        checked.append({"name": name, **entry})
    return checked


def apply(mask: np.ndarray, steps: Sequence[Mapping[str, Any] | str] | None) -> np.ndarray:
    """`mask` (boolean) after each step in order; no steps returns it unchanged."""
    result = np.asarray(mask, dtype=bool)
    for entry in check_steps(steps):
        arguments = {k: v for k, v in entry.items() if k != "name"}
        result = STEPS[entry["name"]](result, **arguments)
    return result
