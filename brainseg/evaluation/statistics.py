"""Is configuration A really better than B on these patients? Paired per-patient statistics
(bootstrap CIs, Wilcoxon signed-rank, Holm), below `minimum_patients` nothing tested
(docs/sweeps.md)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.05  # significance level of the verdicts (the CIs are at 1 - LEVEL)
BETTER, SAME, WORSE = "better", "not distinguishable", "worse"
# A row's paired figures against the reference: None where nothing was compared.
PAIRED_KEYS = ("n_paired", "difference", "difference_ci_low", "difference_ci_high", "p", "p_holm")


def minimum_patients(level: float = LEVEL) -> int:
    """The fewest paired patients on which a two-sided Wilcoxon signed-rank test can reach
    p < level: its smallest p-value over n patients is 2 / 2**n (6 patients at 0.05)."""
    return math.floor(1 - math.log2(level)) + 1


def too_few_patients(level: float = LEVEL) -> str:
    """The verdict of a comparison on fewer than `minimum_patients` patients."""
    return f"too few patients to compare (fewer than {minimum_patients(level)})"


def bootstrap_ci(values: np.ndarray, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The (1 - level) bootstrap interval of the mean (BCa); constant samples: (value, value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    if np.ptp(values) == 0:
        return (float(values[0]), float(values[0]))
    for method in ("BCa", "percentile"):  # BCa is NaN on near-constant samples (rounding noise)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning for exactly that case
            interval = stats.bootstrap(
                (values,),
                np.mean,
                confidence_level=1 - level,
                method=method,
                rng=np.random.default_rng(seed),
            ).confidence_interval
        if not np.isnan(interval.low):
            break
    return (float(interval.low), float(interval.high))


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero)."""
    differences = np.asarray(differences, dtype=np.float64)
    if len(differences) == 0 or not np.any(differences):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties/zeros and small samples
        return float(stats.wilcoxon(differences).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the comparisons)."""
    order, n = np.argsort(p_values), len(p_values)
    steps = np.minimum(1.0, (n - np.arange(n)) * np.asarray(p_values, dtype=np.float64)[order])
    adjusted = np.empty(n)
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted.tolist()


def compare_configurations(
    scores: Mapping[str, Mapping[str, float]], reference: str | None = None, level: float = LEVEL
) -> list[dict[str, Any]]:
    """One row per configuration (`scores`: configuration -> patient -> Dice), best first; each
    other than the reference holds its paired difference to it over the patients both scored."""
    means = {name: float(np.mean(list(dice.values()))) for name, dice in scores.items() if dice}
    if not means:
        return []
    ranked = sorted(means, key=means.get, reverse=True)
    reference = reference if reference in means else ranked[0]
    enough = minimum_patients(level)
    rows = []
    for name in ranked:
        values = np.array(list(scores[name].values()), dtype=np.float64)
        low, high = bootstrap_ci(values, level) if len(values) >= enough else (None, None)
        row: dict[str, Any] = {
            "configuration": name,
            "n": len(values),
            "mean": means[name],
            "median": float(np.median(values)),
            "ci_low": low,
            "ci_high": high,
            "reference": name == reference,
            **dict.fromkeys(PAIRED_KEYS),
            "verdict": "reference" if name == reference else None,
        }
        if name != reference:
            common = sorted(set(scores[name]) & set(scores[reference]))
            differences = np.array([scores[name][p] - scores[reference][p] for p in common])
            difference = float(differences.mean()) if common else float("nan")
            row.update(n_paired=len(common), difference=difference, verdict=too_few_patients(level))
            if len(common) >= enough:
                d_low, d_high = bootstrap_ci(differences, level)
                row.update(
                    difference_ci_low=d_low, difference_ci_high=d_high, p=wilcoxon_p(differences)
                )
        rows.append(row)
    compared = [r for r in rows if r["p"] is not None]
    for row, adjusted in zip(compared, holm([r["p"] for r in compared])):
        row["p_holm"] = adjusted
        if adjusted < level and row["difference"] != 0:
            row["verdict"] = BETTER if row["difference"] > 0 else WORSE
        else:
            row["verdict"] = SAME
    return rows
