"""Which way a logged validation metric improves, for everything that keeps a best epoch by the
config's `monitor` (checkpoint, scheduler, run report, trackers, an Optuna search)."""

from __future__ import annotations

from brainseg.errors import ConfigError
from brainseg.metrics.functional import HIGHER_IS_BETTER
from brainseg.metrics.slice_metrics import slice_metrics

# Logged by the training module besides the per-volume metrics (as patient means) and slice metrics.
_OWN = {"dsc_volume": True, "dsc_volume_median": True, "loss": False}


def higher_is_better(logged: str) -> bool:
    """Direction of a logged validation metric (`val/hd95` -> False), or a ConfigError."""
    directions = {**_OWN, **dict.fromkeys(slice_metrics(), True), **HIGHER_IS_BETTER}
    directions.pop("dsc")  # per-volume Dice is logged as dsc_volume
    stage, _, name = logged.partition("/")
    if stage != "val" or name not in directions:
        known = ", ".join(f"val/{n}" for n in directions)
        raise ConfigError(f"monitor={logged!r}: not a logged metric; choose one of {known}")
    return directions[name]


def mode(logged: str) -> str:
    """`max` or `min`, as Lightning's ModelCheckpoint and ReduceLROnPlateau spell it."""
    return "max" if higher_is_better(logged) else "min"


def improves(value: float, best: float | None, higher: bool) -> bool:
    """Whether `value` beats `best` (None: nothing yet) in the metric's direction."""
    return best is None or (value > best if higher else value < best)
