"""Post-processing steps on binary 3-D masks (slice, row, column), face-connected: each a function
`(mask, **arguments) -> mask` registered under its name, checking its own arguments (ValueError)
so that a config is checked by running its steps on an empty mask before any work."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Step = Callable[..., np.ndarray]
STEPS: dict[str, Step] = {}


def step(function: Step) -> Step:
    """Register a step under its function name (the name a step list uses)."""
    STEPS[function.__name__] = function
    return function


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the face-connected components and the size of each (label 1 first)."""
    labels, count = ndimage.label(mask)
    return labels, np.bincount(labels.ravel(), minlength=count + 1)[1:]


@step
def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest component (all False stays all False). Ties go to the component whose
    first voxel comes first in (slice, row, column) order."""
    labels, sizes = _components(mask)
    if sizes.size == 0:
        return np.zeros_like(mask, dtype=bool)
    return labels == (int(np.argmax(sizes)) + 1)


@step
def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop components smaller than `min_voxels` voxels."""
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, int) or min_voxels < 1:
        raise ValueError(f"min_voxels must be a positive whole number, not {min_voxels!r}")
    labels, sizes = _components(mask)
    keep = np.concatenate([[False], sizes >= min_voxels])
    return keep[labels]


@step
def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that the mask encloses in 3-D."""
    return ndimage.binary_fill_holes(mask)
