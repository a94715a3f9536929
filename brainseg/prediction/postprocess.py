"""Which post-processing steps predict.py applies: an explicit step list; else the decision made
after training (a sweep's `postprocessing.json`, or the one recorded in the checkpoints); else the
steps the model was trained with. Needs nothing but the checkpoints (and the sweep folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainseg.errors import ConfigError, DataError
from brainseg.postprocessing import check_steps
from brainseg.postprocessing.records import DECISION_FILE, read_decision
from brainseg.prediction.members import Member

SETTING = "postprocessing"


def resolve_postprocessing(
    setting: Any, members: Sequence[Member], sweep_dir: Path | None = None
) -> dict[str, Any]:
    """{"postprocessing": steps, "source": where they come from}."""
    if setting is not None:
        if isinstance(setting, str) or not isinstance(setting, list | tuple):
            raise ConfigError(
                f"{SETTING}={setting!r} must be a step list, e.g. [] or "
                "[{name: largest_component}], or null (the steps recorded with the model)"
            )
        return {"postprocessing": check_steps(setting, SETTING), "source": "config"}
    if sweep_dir is not None and (sweep_dir / DECISION_FILE).is_file():
        path = sweep_dir / DECISION_FILE
        return {"postprocessing": read_decision(path)["postprocessing"], "source": str(path)}
    recorded = [m.postprocessing for m in members]
    for member, other in zip(members[1:], recorded[1:]):
        if other["steps"] != recorded[0]["steps"]:
            hint = (
                f"decide once for the sweep with: python -m brainseg.postprocessing decide "
                f"{sweep_dir}, or set {SETTING}"
                if sweep_dir is not None
                else f"set {SETTING}"
            )
            raise ConfigError(
                f"{members[0].path} and {member.path} record different post-processing "
                f"({recorded[0]['steps']} vs {other['steps']}); {hint}"
            )
    try:
        steps = check_steps(recorded[0]["steps"], f"{members[0].path}: {SETTING}")
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return {"postprocessing": steps, "source": recorded[0]["source"]}
