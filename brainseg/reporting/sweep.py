"""The sweep report: which configuration of a Hydra multirun is better, and is it really?

- `summary.csv` / `summary.md`: one row per job (overrides, status, the epoch its
  `evaluation.selection` rule reports, per-volume Dice, train time), then one row per configuration:
  the mean per-volume Dice over its patients with a 95% bootstrap CI and, against the best
  configuration, the paired per-patient difference with its CI, the Wilcoxon signed-rank p-value,
  Holm's correction across the comparisons and a verdict (brainseg.evaluation.statistics). Jobs
  differing only in `data.split.fold` are one configuration: each patient is scored by the fold that
  held it out and the figures are over all patients pooled (not a mean of fold means). Under the
  inner-validation rule (`data.split.n_inner_val`, rule `inner_val`) those are the folds' test
  scores: the held-out patients scored with the checkpoint the inner validation patients chose.
- `per_patient.csv`: configuration, patient, fold, job, rule and every per-volume metric.
- `summary.png` (per-patient strip/box plot per configuration) and `heatmap.png` (configurations x
  patients).

Written by the sweep guard (brainseg.hydra_callbacks.SweepGuard) after every job and at the end
of every multirun, and rebuilt any time with `python -m brainseg.reporting.sweep <sweep dir>`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from brainseg.errors import ConfigError, DataError
from brainseg.evaluation.folds import CV_RULES, reported_scores
from brainseg.evaluation.statistics import LEVEL, compare_configurations, minimum_patients
from brainseg.paths import atomic_writer
from brainseg.reporting.figures import heat_map, strip_box_plot
from brainseg.reporting.scores import metric_columns
from brainseg.run_lock import check_run_directory_free
from brainseg.runfiles import (
    METRICS_FILE,
    RunMetrics,
    read_failure,
    read_metrics,
    read_pruned,
)

FOLD_KEY = "data.split.fold"
JOB_COLUMNS = [
    "job",
    "overrides",
    "status",
    "selection",
    "epoch",
    "dsc_volume_mean",
    "dsc_volume_median",
    "best_on_val_mean",
    "train_seconds",
    "error",
]
COMPARISON_COLUMNS = [
    "configuration",
    "jobs",
    "selection",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "median",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "p",
    "p_holm",
    "verdict",
]


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    try:  # plain YAML only: a tag that would build an object is an error, never run
        items = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not a list of overrides ({str(exc).splitlines()[0]})") from None
    if not (isinstance(items, list) and all(isinstance(item, str) for item in items)):
        raise DataError(f"{path}: not a list of overrides")
    return dict(item.split("=", 1) for item in items if "=" in item)


# A job's status: finished in this start of the sweep (done; resumed from its last.ckpt), in an
# earlier one (reused), stopped by the sweeper's pruner (pruned, never compared), failed,
# running (its run directory locked), or interrupted (killed: a resumed sweep continues it).
FINISHED = ("done", "resumed", "reused")
STATUSES = (*FINISHED, "pruned", "no validation", "failed", "running", "interrupted")


def _status(job: Path, metrics: RunMetrics, started: float) -> str:
    """The status of a job with a metrics.json (see FINISHED)."""
    if read_pruned(job) is not None:
        return "pruned"
    if reported_scores(metrics) is None:
        return "no validation"
    if (job / METRICS_FILE).stat().st_mtime < started:
        return "reused"
    logs = job.glob("*.log")
    return "resumed" if any("resuming from" in log.read_text() for log in logs) else "done"


def _running(job: Path) -> bool:
    try:
        check_run_directory_free(job)
    except ConfigError:
        return True
    return False


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder (holding .hydra/overrides.yaml) of the sweep, in job order, with its
    status and the scores its rule reports (`brainseg.evaluation.folds.reported_scores`)."""
    jobs = []
    folders = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()]
    start = sweep_dir / "multirun.yaml"  # rewritten by every start of the sweep
    started = start.stat().st_mtime if start.is_file() else 0.0
    for job in sorted(folders, key=lambda p: (len(p.name), p.name)):
        row: dict[str, Any] = {
            **dict.fromkeys(JOB_COLUMNS),
            "job": job.name,
            "overrides": _overrides(job),
            "status": "running" if _running(job) else "interrupted",
            "error": "",
            "per_patient": {},
        }
        metrics, failure = read_metrics(job), read_failure(job)
        if metrics is not None and metrics.finished:
            reported = reported_scores(metrics)
            scores = reported.scores if reported else None
            row.update(
                status=_status(job, metrics, started),
                selection=reported and reported.rule,
                epoch=scores and scores.epoch,
                dsc_volume_mean=scores and scores.dsc_volume_mean,
                dsc_volume_median=scores and scores.dsc_volume_median,
                best_on_val_mean=metrics.best and metrics.best.dsc_volume_mean,
                train_seconds=metrics.train_seconds,
                per_patient=scores.per_patient_metrics if scores else {},
            )
        elif failure is not None and row["status"] != "running":
            row.update(status="failed", error=failure.headline)
        jobs.append(row)
    return jobs


def _varying(jobs: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs (all keys for a single job)."""
    keys = sorted({k for j in jobs for k in j["overrides"]})
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]


def _is_decimal(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return any(c in value.lower() for c in ".e")


def _significant_digits(jobs: list[dict[str, Any]], keys: list[str]) -> int:
    """The fewest significant digits (at least 4) at which the sweep's distinct decimal values
    stay distinct: Optuna's 0.0012345678901234567 shows as 0.001235, never merged with a
    neighbour."""
    decimals = {float(v) for j in jobs for k in keys if _is_decimal(v := j["overrides"].get(k, ""))}
    return next(
        (d for d in range(4, 17) if len({f"{v:.{d}g}" for v in decimals}) == len(decimals)), 17
    )


def _labels(
    jobs: list[dict[str, Any]], keys: list[str], fallback: str | None = None
) -> dict[str, str]:
    """Job name -> its configuration label: the overrides that vary across the sweep, numbers with
    `_significant_digits`."""
    digits = _significant_digits(jobs, keys)

    def shown(value: str) -> str:
        return f"{float(value):.{digits}g}" if _is_decimal(value) else value

    labels = {}
    for job in jobs:
        text = " ".join(f"{k}={shown(job['overrides'][k])}" for k in keys if k in job["overrides"])
        labels[job["job"]] = text or (fallback if fallback is not None else f"job {job['job']}")
    return labels


def configurations(jobs: list[dict[str, Any]]) -> dict[str, str]:
    """Job name -> its configuration: the overrides that vary across the jobs, but the fold (jobs
    that differ only in data.split.fold are one configuration, its cross-validation)."""
    keys = _varying(jobs)
    config_keys = [k for k in keys if k != FOLD_KEY]
    return _labels(jobs, config_keys, "all folds" if FOLD_KEY in keys else None)


def pooled_per_patient(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (configuration, patient) of every finished job, each patient scored by the fold
    that held it out."""
    labels = configurations(jobs)
    rows = []
    for job in jobs:
        if job["status"] not in FINISHED:
            continue
        for patient, scores in job["per_patient"].items():
            rows.append(
                {
                    "configuration": labels[job["job"]],
                    "patient": patient,
                    "fold": job["overrides"].get(FOLD_KEY, ""),
                    "job": job["job"],
                    "selection": job["selection"],
                    **scores,
                }
            )
    return rows


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-configuration statistics table (see the module docstring)."""
    dice: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rules: dict[str, set[str]] = defaultdict(set)
    job_counts: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        dice[row["configuration"]][row["patient"]].append(row["dsc"])
        rules[row["configuration"]].add(row["selection"])
        job_counts[row["configuration"]].add(row["job"])
    scores = {
        name: {p: float(np.mean(v)) for p, v in values.items()} for name, values in dice.items()
    }
    table = compare_configurations(scores)
    for entry in table:
        entry["selection"] = ",".join(sorted(rules[entry["configuration"]]))
        entry["jobs"] = len(job_counts[entry["configuration"]])
    return table


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None or np.isnan(low) else f"[{low:.4f}, {high:.4f}]"


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with atomic_writer(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _markdown(
    sweep_dir: Path, jobs: list[dict[str, Any]], keys: list[str], table: list[dict[str, Any]]
) -> list[str]:
    statuses = sorted((j["status"] for j in jobs), key=list(STATUSES).index)
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        (
            f"{len(jobs)} jobs: "
            + ", ".join(f"{n} {status}" for status, n in Counter(statuses).items())
            + ". Per-volume Dice on each job's "
            "validation patients at the epoch its `evaluation.selection` rule reports (rule "
            "`inner_val`: on its held-out test patients, with the checkpoint its inner validation "
            "patients chose)."
        ),
        "",
        (
            "| job | overrides | status | rule | epoch | mean DSC | median DSC "
            "| best-epoch mean DSC (selected on validation) | train s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = _labels(jobs, keys)
    for job in jobs:
        status = job["status"] + (f" ({job['error']})" if job["error"] else "")
        lines.append(
            f"| {job['job']} | {labels[job['job']]} | {status} | {_fmt(job['selection'])} | "
            f"{_fmt(job['epoch'])} | "
            f"{_fmt(job['dsc_volume_mean'])} | {_fmt(job['dsc_volume_median'])} | "
            f"{_fmt(job['best_on_val_mean'])} | {_fmt(job['train_seconds'], 1)} |"
        )
    if not table:
        return lines
    pooled = " (cross-validation: every patient scored by the fold that held it out, pooled)"
    lines += [
        "",
        "## Configurations" + (pooled if FOLD_KEY in keys else ""),
        "",
        (
            "Mean per-volume Dice over patients with its 95% bootstrap CI; against the best "
            "configuration the paired per-patient difference (this minus best) with its 95% CI, "
            "the two-sided Wilcoxon signed-rank "
            f"p-value and its Holm correction across the comparisons; verdict at level {LEVEL}."
        ),
        "",
        (
            "| configuration | rule | jobs | patients | mean DSC [95% CI] | median "
            "| Δ vs best [95% CI] | p | p (Holm) | verdict |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        difference_ci = (
            _interval(r["difference_ci_low"], r["difference_ci_high"])
            if r["difference"] is not None
            else ""
        )
        lines.append(
            f"| {r['configuration']} | {r['selection']} | {r['jobs']} | {r['n']} | {r['mean']:.4f} "
            f"{_interval(r['ci_low'], r['ci_high'])} | {r['median']:.4f} | "
            f"{_fmt(r['difference'])} {difference_ci} | "
            f"{_fmt(r['p'])} | {_fmt(r['p_holm'])} | {r['verdict']} |"
        )
    if any(
        r["n"] < minimum_patients() or r["n_paired"] is not None and r["p"] is None for r in table
    ):
        lines += [
            "",
            (
                f"**This sweep cannot compare configurations scored on fewer than "
                f"{minimum_patients()} patients**: on so few, a two-sided Wilcoxon signed-rank "
                f"test cannot reach p < {LEVEL} whatever the scores, so they get no interval, no "
                "p-value and no verdict. Score more patients (e.g. cross-validation folds over "
                "`data.split.fold`)."
            ),
        ]
    lines += ["", "Rules: " + "; ".join(f"`{k}` = {v}" for k, v in CV_RULES.items()) + "."]
    return lines


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv, summary.md, per_patient.csv,
    summary.png and heatmap.png into the sweep directory."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    keys = _varying(jobs)
    rows = pooled_per_patient(jobs)
    table = compare(rows)
    labels = _labels(jobs, keys)
    _write_csv(
        sweep_dir / "summary.csv",
        JOB_COLUMNS,
        [{**job, "overrides": labels[job["job"]]} for job in jobs],
    )
    _write_csv(sweep_dir / "comparison.csv", COMPARISON_COLUMNS, table)
    _write_csv(
        sweep_dir / "per_patient.csv",
        ["configuration", "patient", "fold", "job", "selection", *(rows and metric_columns(rows))],
        rows,
    )
    with atomic_writer(sweep_dir / "summary.md") as fh:
        fh.write("\n".join(_markdown(sweep_dir, jobs, keys, table)) + "\n")
    if table:
        scores: dict[str, dict[str, float]] = {r["configuration"]: {} for r in table}
        for row in rows:
            scores[row["configuration"]][row["patient"]] = row["dsc"]
        strip_box_plot(
            scores,
            sweep_dir / "summary.png",
            "Per-volume Dice per patient, best configuration on top",
        )
        heat_map(scores, sweep_dir / "heatmap.png", "Per-volume Dice: configurations x patients")
    return {"jobs": jobs, "configurations": table, "per_patient": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild the report of a train.py -m sweep directory."
    )
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir}: sweep directory not found", file=sys.stderr)
        return 2
    try:
        report = write_report(sweep_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((sweep_dir / "summary.md").read_text())
    return 0 if report["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
