"""Which post-processing steps predict.py applies: a step list from the config, or `auto`
(nnU-Net style): chosen among candidate step lists on held-out patients with a rule that one
noisy patient cannot flip, recorded in JSON next to the checkpoint and re-read by step name."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import dice_score
from brainseg.postprocessing import apply, check_steps
from brainseg.prediction.inference import Predictor
from brainseg.prediction.members import Member
from brainseg.prediction.subsets import member_plan, patient_subset

log = logging.getLogger("brainseg")

SETTING = "postprocessing"
DECISION = "postprocessing_decision"
CHANGE_TOLERANCE = 1e-9  # Dice differences below this count as "unchanged"
ADOPTION_RULE = ("a later candidate replaces the current choice only if it raises the mean per-volume Dice "
                 "AND helps more patients than it hurts")


def decision_path(member: Member) -> Path:
    return member.path.with_name(member.path.stem + ".postprocess.json")


def compare(candidate: Sequence[float], current: Sequence[float]) -> dict[str, Any]:
    """The rule on paired per-patient Dice, with its figures: both means, patients helped, hurt and
    unchanged, and a one-sided paired Wilcoxon p-value (recorded for information)."""
    candidate, current = np.asarray(candidate, np.float64), np.asarray(current, np.float64)
    diff = candidate - current
    helped, hurt = int((diff > CHANGE_TOLERANCE).sum()), int((diff < -CHANGE_TOLERANCE).sum())
    p_value = float(wilcoxon(candidate, current, alternative="greater").pvalue) if helped + hurt else 1.0
    return {"adopted": bool(candidate.mean() > current.mean() and helped > hurt), "dsc": float(candidate.mean()),
            "dsc_current": float(current.mean()), "helped": helped, "hurt": hurt,
            "unchanged": len(diff) - helped - hurt, "wilcoxon_p_greater": p_value}


def decide(predictor: Predictor, data_root: str | Path, patients: list[str], threshold: float,
           candidates: list[list[dict[str, Any]]], ensemble: str = "out_of_fold") -> dict[str, Any]:
    """Score every candidate on the patients, each predicted only by members that did not train on
    it (patients the predicting members trained on are left out), and walk the candidates in
    order: the simplest, listed first, stays unless a later one passes `compare`."""
    available = {p.name: p for p in find_patients(data_root)}
    missing = [n for n in patients if n not in available]
    if missing:
        raise ConfigError(f"{DECISION}.patients: {missing[0]} not found under {data_root}")
    splits = [m.split for m in predictor.members]
    plan = member_plan(splits, patients, ensemble)
    eligible = [n for n in patients if patient_subset(n, [splits[i] for i in plan[n]]) != "train"]
    if not eligible:
        raise ConfigError(
            f"{SETTING}=auto: every one of the {len(patients)} patients was trained on by the members that would "
            f"predict it; set {DECISION}.patients (and {DECISION}.data_root) to held-out patients, "
            f"ensemble=out_of_fold, or give {SETTING} as a step list")
    if len(eligible) < len(patients):
        log.warning("%s=auto: left out %d patient(s) the deciding members trained on: %s", SETTING,
                    len(patients) - len(eligible), ", ".join(sorted(set(patients) - set(eligible))))
    scores: list[list[float]] = [[] for _ in candidates]
    for name in eligible:
        volume = read_patient(available[name])
        raw, truth = predictor.predict(volume, plan[name]) > threshold, volume.mask.astype(bool)
        for values, steps in zip(scores, candidates):
            values.append(dice_score(apply(raw, steps), truth))
    best, comparisons = 0, []
    for i in range(1, len(candidates)):
        result = compare(scores[i], scores[best])
        comparisons.append({"candidate": candidates[i], "against": candidates[best], **result})
        best = i if result["adopted"] else best
    return {"postprocessing": candidates[best], "rule": ADOPTION_RULE,
            "candidates": [{"postprocessing": c, "dsc": float(np.mean(v))} for c, v in zip(candidates, scores)],
            "comparisons": comparisons, "patients": eligible, "ensemble": ensemble, "data_root": str(data_root),
            "per_patient": {n: [v[k] for v in scores] for k, n in enumerate(eligible)}}


def describe(decision: dict[str, Any]) -> str:
    """One line: the choice, and for each comparison both means and the vote."""
    parts = [f"{[s['name'] for s in c['candidate']]} vs {[s['name'] for s in c['against']]}: mean Dice "
             f"{c['dsc']:.4f} vs {c['dsc_current']:.4f}, helps {c['helped']}, hurts {c['hurt']}, "
             f"Wilcoxon p={c['wilcoxon_p_greater']:.3g}, {'adopted' if c['adopted'] else 'not adopted'}"
             for c in decision.get("comparisons", [])]
    return (f"{SETTING}=auto chose {[s['name'] for s in decision['postprocessing']]} on "
            f"{len(decision.get('patients', []))} held-out patients ({'; '.join(parts) or 'one candidate'})")


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


def default_patients(members: Sequence[Member]) -> list[str]:
    """Every member's validation patients (for k folds: everyone, each predicted by its own fold)."""
    return list(dict.fromkeys(name for m in members for name in (m.split.get("val") or [])))


def resolve_postprocessing(setting: Any, predictor: Predictor, threshold: float, views: list[str],
                           decision_cfg: dict[str, Any], ensemble: str = "out_of_fold") -> dict[str, Any]:
    """A step list as given; `auto` reuses or makes the recorded decision for these members and views.

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
    names = list(decision_cfg.get("patients") or default_patients(predictor.members))
    if not root or not Path(root).is_dir() or not names:
        where = f"{root} is not available" if root else "the checkpoint records none"
        raise ConfigError(
            f"{SETTING}=auto needs validation data: "
            f"set {DECISION}.data_root (and {DECISION}.patients) "
            f"or give {SETTING} as a step list ({where})"
        )
    key = {"members": [str(m.path.resolve()) for m in predictor.members], "views": views,
           "threshold": threshold, "patients": names, "data_root": str(Path(root).resolve()),
           "candidates": candidates, "ensemble": ensemble, "rule": ADOPTION_RULE}
    path = decision_path(first)
    decision = _read_decision(path, key) if path.exists() else None
    if decision is None:
        decision = decide(predictor, root, names, threshold, candidates, ensemble)
        path.write_text(json.dumps({"key": key, "decision": decision}, indent=2))
    log.info("%s (recorded in %s)", describe(decision), path)
    return {**decision, "source": str(path)}
