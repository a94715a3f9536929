"""Which post-processing steps predict.py applies: a step list from the config, or `auto`
(nnU-Net style): the candidate step list with the best mean per-volume Dice on validation
patients, recorded in JSON next to the checkpoint and re-read by step name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import dice_score
from brainseg.postprocessing import apply, check_steps
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import Member

SETTING = "postprocessing"
DECISION = "postprocessing_decision"


def decision_path(member: Member) -> Path:
    return member.path.with_name(member.path.stem + ".postprocess.json")


def decide(
    predictor: Predictor,
    data_root: str | Path,
    patients: list[str],
    threshold: float,
    candidates: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    """The first candidate with the highest mean per-volume Dice on these patients (a later
    candidate must do strictly better, so the simplest listed first wins ties)."""
    available = {p.name: p for p in find_patients(data_root)}
    missing = [n for n in patients if n not in available]
    if missing:
        raise ConfigError(f"{DECISION}.patients: {missing[0]} not found under {data_root}")
    scores = [[] for _ in candidates]
    for name in patients:
        volume = read_patient(available[name])
        raw, truth = predictor.predict(volume) > threshold, volume.mask.astype(bool)
        for values, steps in zip(scores, candidates):
            values.append(dice_score(apply(raw, steps), truth))
    means = [float(np.mean(values)) for values in scores]
    best = max(range(len(candidates)), key=lambda i: (means[i], -i))
    return {
        "postprocessing": candidates[best],
        "candidates": [{"postprocessing": c, "dsc": m} for c, m in zip(candidates, means)],
        "patients": patients,
        "data_root": str(data_root),
    }


def _read_decision(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded decision if it was made for `key`; its steps re-checked by name."""
    stored = json.loads(path.read_text())
    if stored.get("key") != key:
        return None
    decision = dict(stored["decision"])
    try:
        decision["postprocessing"] = check_steps(
            decision.get("postprocessing"), f"{path}: postprocessing"
        )
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return decision


def resolve_postprocessing(
    setting: Any,
    predictor: Predictor,
    threshold: float,
    views: list[str],
    decision_cfg: dict[str, Any],
) -> dict[str, Any]:
    """A step list as given; `auto` reuses or makes the recorded decision (members, views).

    Returns {"postprocessing": steps, "source": "config" | decision file, ...decision details}."""
    if setting != "auto":
        if isinstance(setting, str) or not isinstance(setting, list | tuple):
            raise ConfigError(
                f"{SETTING}={setting!r} must be auto or a step list, "
                "e.g. [] or [{name: largest_component}]"
            )
        return {"postprocessing": check_steps(setting, SETTING), "source": "config"}
    candidates = [
        check_steps(c, f"{DECISION}.candidates[{i}]")
        for i, c in enumerate(decision_cfg.get("candidates") or [])
    ]
    if not candidates:
        raise ConfigError(f"{SETTING}=auto needs {DECISION}.candidates (step lists to choose from)")
    first = predictor.members[0]
    root = decision_cfg.get("data_root") or first.data_root
    names = list(decision_cfg.get("patients") or first.split.get("val") or [])
    if not root or not Path(root).is_dir() or not names:
        where = f"{root} is not available" if root else "the checkpoint records none"
        raise ConfigError(
            f"{SETTING}=auto needs validation data: "
            f"set {DECISION}.data_root (and {DECISION}.patients) "
            f"or give {SETTING} as a step list ({where})"
        )
    key = {
        "members": [str(m.path.resolve()) for m in predictor.members],
        "views": views,
        "threshold": threshold,
        "patients": names,
        "data_root": str(Path(root).resolve()),
        "candidates": candidates,
    }
    path = decision_path(first)
    decision = _read_decision(path, key) if path.exists() else None
    if decision is None:
        decision = decide(predictor, root, names, threshold, candidates)
        path.write_text(json.dumps({"key": key, "decision": decision}, indent=2))
    return {**decision, "source": str(path)}
