"""Which post-processing steps a trained model keeps (the nnU-Net habit): decided once, after
training, on thresholded validation predictions in their original geometry, by a rule that one
noisy patient cannot flip; erased lesions are listed, never silent (docs/prediction.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from brainseg.metrics import NSD_TOLERANCE
from brainseg.postprocessing import StepList, score

CHANGE_TOLERANCE = 1e-9  # Dice differences below this count as "unchanged"
ADOPTION_RULE = (
    "a later candidate replaces the current choice only if it raises the mean per-volume Dice "
    "AND helps more patients than it hurts"
)
# (patient, thresholded prediction, truth): boolean (slices, rows, columns) arrays.
Prediction = tuple[str, np.ndarray, np.ndarray]


def compare(candidate: Sequence[float], current: Sequence[float]) -> dict[str, Any]:
    """The rule on paired per-patient Dice, with its figures: both means, patients helped, hurt and
    unchanged, and a one-sided paired Wilcoxon p-value (recorded for information)."""
    candidate, current = np.asarray(candidate, np.float64), np.asarray(current, np.float64)
    diff = candidate - current
    helped, hurt = int((diff > CHANGE_TOLERANCE).sum()), int((diff < -CHANGE_TOLERANCE).sum())
    greater = wilcoxon(candidate, current, alternative="greater").pvalue if helped + hurt else 1.0
    return {
        "adopted": bool(candidate.mean() > current.mean() and helped > hurt),
        "dsc": float(candidate.mean()),
        "dsc_current": float(current.mean()),
        "helped": helped,
        "hurt": hurt,
        "unchanged": len(diff) - helped - hurt,
        "wilcoxon_p_greater": float(greater),
    }


def decide(
    predictions: Iterable[Prediction],
    candidates: Sequence[StepList],
    tolerance: float = NSD_TOLERANCE,
) -> dict[str, Any]:
    """The chosen step list and everything that led to it, every patient scored by `score` (one
    in memory at a time)."""
    if not candidates:
        raise ValueError("decide needs at least one candidate step list")
    raw_dice: dict[str, float] = {}
    scores: dict[str, list[dict[str, float]]] = {}
    for name, raw, truth in predictions:
        raw_dice[name] = score(raw, truth, [], tolerance)["dsc"]
        scores[name] = [score(raw, truth, steps, tolerance) for steps in candidates]
    if not scores:
        raise ValueError("decide needs at least one patient")
    names = list(scores)
    columns = [[scores[n][i]["dsc"] for n in names] for i in range(len(candidates))]
    erased = [[n for n, d in zip(names, c) if raw_dice[n] > 0 and d == 0] for c in columns]
    best, comparisons = 0, []
    for i in range(1, len(candidates)):
        result = compare(columns[i], columns[best])
        pair = {"candidate": list(candidates[i]), "against": list(candidates[best])}
        comparisons.append({**pair, **result, "erased": erased[i]})
        best = i if result["adopted"] else best
    return {
        "postprocessing": list(candidates[best]),
        "rule": ADOPTION_RULE,
        "erased": erased[best],
        "candidates": [
            {"postprocessing": list(c), "dsc": float(np.mean(v)), "erased": e}
            for c, v, e in zip(candidates, columns, erased)
        ],
        "comparisons": comparisons,
        "patients": names,
        "dsc_raw": raw_dice,
        "per_patient": {n: [column[k] for column in columns] for k, n in enumerate(names)},
        "nsd_tolerance": tolerance,
        "metrics": {n: scores[n][best] for n in names},
    }


def describe(decision: dict[str, Any]) -> str:
    """The decision in one log line."""
    votes = "; ".join(
        f"{_names(c['candidate'])} vs {_names(c['against'])}: mean Dice {c['dsc']:.4f} vs "
        f"{c['dsc_current']:.4f}, helps {c['helped']}, hurts {c['hurt']}, erases "
        f"{len(c['erased'])}, Wilcoxon p={c['wilcoxon_p_greater']:.3g}, "
        + ("adopted" if c["adopted"] else "not adopted")
        for c in decision["comparisons"]
    )
    erased = ", ".join(decision["erased"])
    return (
        f"post-processing chosen: {_names(decision['postprocessing'])} on "
        f"{len(decision['patients'])} validation patients ({votes or 'one candidate'})"
        + (f"; it erases the lesion (Dice > 0 without it, 0 with it) of {erased}" if erased else "")
    )


def _names(steps: StepList) -> list[str]:
    return [s["name"] for s in steps]
