"""The largest-connected-component decision: fixed, or `auto` (nnU-Net style) decided on
held-out patients with a rule that a single noisy patient cannot flip, and recorded in JSON
next to the checkpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import Member
from brainseg.prediction.subsets import member_plan, patient_subset
from brainseg.reporting.scores import patient_row

log = logging.getLogger("brainseg")

CHANGE_TOLERANCE = 1e-9  # Dice differences below this count as "unchanged"
ADOPTION_RULE = "adopt if it raises the mean per-volume Dice AND helps more patients than it hurts"


def decision_path(member: Member) -> Path:
    return member.path.with_name(member.path.stem + ".postprocess.json")


def adopt_largest_component(with_lcc: Sequence[float], without: Sequence[float]) -> dict[str, Any]:
    """Apply the rule to paired per-patient Dice; the figures (both means, patients helped and
    hurt, a one-sided paired Wilcoxon p-value for information) are returned with the decision."""
    with_lcc, without = np.asarray(with_lcc, np.float64), np.asarray(without, np.float64)
    diff = with_lcc - without
    helped, hurt = int((diff > CHANGE_TOLERANCE).sum()), int((diff < -CHANGE_TOLERANCE).sum())
    p_value = float(wilcoxon(with_lcc, without, alternative="greater").pvalue) if helped + hurt else 1.0
    adopted = bool(with_lcc.mean() > without.mean() and helped > hurt)
    return {"lcc": adopted, "rule": ADOPTION_RULE, "dsc_lcc": float(with_lcc.mean()),
            "dsc_no_lcc": float(without.mean()), "helped": helped, "hurt": hurt,
            "unchanged": len(diff) - helped - hurt, "wilcoxon_p_greater": p_value}


def decide_lcc(predictor: Predictor, data_root: str | Path, patients: list[str], threshold: float,
               ensemble: str = "out_of_fold") -> dict[str, Any]:
    """Score the patients with and without the largest component, each predicted only by members
    that did not train on it (patients every member trained on are left out), and apply the rule."""
    available = {p.name: p for p in find_patients(data_root)}
    missing = [n for n in patients if n not in available]
    if missing:
        raise ConfigError(f"postprocess.patients: {missing[0]} not found under {data_root}")
    splits = [m.split for m in predictor.members]
    plan = member_plan(splits, patients, ensemble)
    eligible = [n for n in patients if patient_subset(n, [splits[i] for i in plan[n]]) != "train"]
    if not eligible:
        raise ConfigError(
            f"postprocess.lcc=auto: every one of the {len(patients)} patients was trained on by the members that "
            "would predict it; set postprocess.patients (and postprocess.data_root) to held-out patients, "
            "ensemble=out_of_fold, or postprocess.lcc=true/false")
    if len(eligible) < len(patients):
        log.warning("postprocess.lcc=auto: left out %d patient(s) the deciding members trained on: %s",
                    len(patients) - len(eligible), ", ".join(sorted(set(patients) - set(eligible))))
    rows = []
    for name in eligible:
        volume = read_patient(available[name])
        probs = predictor.predict(volume, plan[name])
        rows.append(patient_row(name, probs, volume.mask.astype(bool), threshold, lcc=True))
    decision = adopt_largest_component([r["dsc_lcc"] for r in rows], [r["dsc_no_lcc"] for r in rows])
    return {**decision, "patients": eligible, "ensemble": ensemble, "data_root": str(data_root),
            "per_patient": {r["patient"]: {"dsc_lcc": r["dsc_lcc"], "dsc_no_lcc": r["dsc_no_lcc"]} for r in rows}}


def describe(decision: dict[str, Any]) -> str:
    """One line: the decision, both means and the vote."""
    return (f"largest component {'applied' if decision['lcc'] else 'not applied'}: mean per-volume Dice "
            f"{decision['dsc_lcc']:.4f} with, {decision['dsc_no_lcc']:.4f} without over {len(decision['patients'])} "
            f"held-out patients; helps {decision['helped']}, hurts {decision['hurt']}, "
            f"Wilcoxon p={decision['wilcoxon_p_greater']:.3g} (rule: {decision['rule']})")


def default_patients(members: Sequence[Member]) -> list[str]:
    """Every member's validation patients (for k folds: everyone, each predicted by its own fold)."""
    return list(dict.fromkeys(name for m in members for name in (m.split.get("val") or [])))


def resolve_lcc(setting: Any, predictor: Predictor, threshold: float, views: list[str],
                data_root: str | None = None, patients: list[str] | None = None,
                ensemble: str = "out_of_fold") -> dict[str, Any]:
    """`true`/`false` as given; `auto` reuses or makes the recorded decision for these members and views."""
    if isinstance(setting, bool):
        return {"lcc": setting, "source": "config"}
    if setting != "auto":
        raise ConfigError(f"postprocess.lcc={setting!r} must be true, false or auto")
    first = predictor.members[0]
    root = data_root or first.data_root
    names = list(patients or default_patients(predictor.members))
    if not root or not Path(root).is_dir() or not names:
        where = f"{root} is not available" if root else "the checkpoint records none"
        raise ConfigError(
            "postprocess.lcc=auto needs validation data: set postprocess.data_root (and postprocess.patients) "
            f"or postprocess.lcc=true/false ({where})"
        )
    key = {"members": [str(m.path.resolve()) for m in predictor.members], "views": views,
           "threshold": threshold, "patients": names, "data_root": str(Path(root).resolve()),
           "ensemble": ensemble, "rule": ADOPTION_RULE}
    path = decision_path(first)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            log.info("%s (recorded in %s)", describe(stored["decision"]), path)
            return {**stored["decision"], "source": str(path)}
    decision = decide_lcc(predictor, root, names, threshold, ensemble)
    path.write_text(json.dumps({"key": key, "decision": decision}, indent=2))
    log.info("%s (recorded in %s)", describe(decision), path)
    return {**decision, "source": str(path)}
