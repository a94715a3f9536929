"""The largest-connected-component decision: fixed, or `auto` (nnU-Net style) decided on
validation patients and recorded in JSON next to the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import Member
from brainseg.reporting.scores import patient_row


def decision_path(member: Member) -> Path:
    return member.path.with_name(member.path.stem + ".postprocess.json")


def decide_lcc(predictor: Predictor, data_root: str | Path, patients: list[str], threshold: float) -> dict[str, Any]:
    """Keep the largest component only if it raises the mean per-volume Dice on these patients."""
    available = {p.name: p for p in find_patients(data_root)}
    missing = [n for n in patients if n not in available]
    if missing:
        raise ConfigError(f"postprocess.patients: {missing[0]} not found under {data_root}")
    rows = []
    for name in patients:
        volume = read_patient(available[name])
        rows.append(patient_row(name, predictor.predict(volume), volume.mask.astype(bool), threshold, lcc=True))
    with_lcc = float(np.mean([r["dsc_lcc"] for r in rows]))
    without = float(np.mean([r["dsc_no_lcc"] for r in rows]))
    return {"lcc": with_lcc > without, "dsc_lcc": with_lcc, "dsc_no_lcc": without, "patients": patients,
            "data_root": str(data_root)}


def resolve_lcc(setting: Any, predictor: Predictor, threshold: float, views: list[str],
                data_root: str | None = None, patients: list[str] | None = None) -> dict[str, Any]:
    """`true`/`false` as given; `auto` reuses or makes the recorded decision for these members and views."""
    if isinstance(setting, bool):
        return {"lcc": setting, "source": "config"}
    if setting != "auto":
        raise ConfigError(f"postprocess.lcc={setting!r} must be true, false or auto")
    first = predictor.members[0]
    root = data_root or first.data_root
    names = list(patients or first.split.get("val") or [])
    if not root or not Path(root).is_dir() or not names:
        where = f"{root} is not available" if root else "the checkpoint records none"
        raise ConfigError(
            "postprocess.lcc=auto needs validation data: set postprocess.data_root (and postprocess.patients) "
            f"or postprocess.lcc=true/false ({where})"
        )
    key = {"members": [str(m.path.resolve()) for m in predictor.members], "views": views,
           "threshold": threshold, "patients": names, "data_root": str(Path(root).resolve())}
    path = decision_path(first)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return {**stored["decision"], "source": str(path)}
    decision = decide_lcc(predictor, root, names, threshold)
    path.write_text(json.dumps({"key": key, "decision": decision}, indent=2))
    return {**decision, "source": str(path)}
