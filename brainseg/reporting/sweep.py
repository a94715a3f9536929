"""The sweep report (docs/sweeps.md): which configuration of a Hydra multirun is better, and is it
really? A k-fold configuration's patients are each scored by the fold that held them out, pooled,
after its one post-processing decision (`pooled_decision`), as predict.py `sweep_dir=` scores."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from brainseg.cli import exit_status
from brainseg.errors import ConfigError, DataError
from brainseg.evaluation.folds import CV_RULES, INNER_VAL, reported_scores
from brainseg.evaluation.statistics import LEVEL, WORSE, compare_configurations, minimum_patients
from brainseg.paths import atomic_writer
from brainseg.postprocessing.records import pooled_decision
from brainseg.reporting.figures import FAILURES_FILE, heat_map, strip_box_plot
from brainseg.reporting.scores import metric_columns
from brainseg.run_lock import check_run_directory_free
from brainseg.runfiles import (
    METRICS_FILE,
    VAL_DSC,
    VAL_DSC_MEDIAN,
    read_failure,
    read_metrics,
    read_pruned,
)

log = logging.getLogger("brainseg")
FOLD_KEY = "data.split.fold"
BEST_ON_VAL_DSC = "best_on_val/dsc_volume"  # as the W&B run summary labels it
# summary.csv's columns and summary.md's headers: each says what its figure is
JOB_COLUMNS = {
    "job": "job",
    "overrides": "overrides",
    "status": "status",
    "selection": "rule",
    "epoch": "epoch",
    VAL_DSC: f"reported {VAL_DSC} (original geometry, the run's decided post-processing)",
    VAL_DSC_MEDIAN: f"reported {VAL_DSC_MEDIAN}",
    BEST_ON_VAL_DSC: f"{BEST_ON_VAL_DSC} (training grid, epoch selected on these patients)",
    "train_seconds": "train s",
    "error": "error",
}
COMPARISON_COLUMNS = [
    *("configuration", "jobs", "selection", "postprocessing", "n", "mean", "ci_low", "ci_high"),
    *("median", "difference", "difference_ci_low", "difference_ci_high", "p", "p_holm", "verdict"),
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


def _status(job: Path, validated: bool, started: float) -> str:
    """The status of a job with a finished metrics.json (see FINISHED)."""
    if read_pruned(job) is not None:
        return "pruned"
    if not validated:
        return "no validation"
    if (job / METRICS_FILE).stat().st_mtime < started:
        return "reused"
    logs = job.glob("*.log")
    return "resumed" if any("resuming from" in log.read_text() for log in logs) else "done"


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder (holding .hydra/overrides.yaml) of the sweep, in job order, with its
    status and the scores its rule reports (`brainseg.evaluation.folds.reported_scores`)."""
    jobs = []
    folders = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()]
    start = sweep_dir / "multirun.yaml"  # rewritten by every start of the sweep
    started = start.stat().st_mtime if start.is_file() else 0.0
    for job in sorted(folders, key=lambda p: (len(p.name), p.name)):
        try:
            check_run_directory_free(job)
            status = "interrupted"
        except ConfigError:
            status = "running"
        row: dict[str, Any] = {**dict.fromkeys(JOB_COLUMNS), "job": job.name, "status": status}
        row.update(overrides=_overrides(job), error="", per_patient={})
        metrics, failure = read_metrics(job), read_failure(job)
        if metrics is not None and metrics.finished:
            reported = reported_scores(metrics)
            row["status"] = _status(job, reported is not None, started)
            row.update(train_seconds=metrics.train_seconds)
            row[BEST_ON_VAL_DSC] = metrics.best and metrics.best.dsc_volume_mean
            if reported is not None:
                scores = reported.scores
                row.update(selection=reported.rule, postprocessing=reported.postprocessing)
                row.update(epoch=scores.epoch, per_patient=scores.per_patient_metrics)
                row[VAL_DSC], row[VAL_DSC_MEDIAN] = scores.dsc_volume_mean, scores.dsc_volume_median
        elif failure is not None and row["status"] != "running":
            row.update(status="failed", error=failure.headline)
        jobs.append(row)
    return jobs


def _is_decimal(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return any(c in value.lower() for c in ".e")


def configurations(jobs: list[dict[str, Any]]) -> dict[str, str]:
    """Job name -> its configuration: the overrides that vary across the jobs (all of a single
    job's), but the fold (jobs that differ only in data.split.fold are one configuration, its
    cross-validation). Decimals show with the fewest significant digits (at least 4) that keep the
    sweep's values distinct: Optuna's 0.0012345678901234567 shows as 0.001235."""
    keys = sorted({k for job in jobs for k in job["overrides"]} - {FOLD_KEY})
    if len(jobs) > 1:
        keys = [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]
    values = {job["overrides"].get(k, "") for job in jobs for k in keys}
    decimals = {float(v) for v in values if _is_decimal(v)}
    digits = next(
        (d for d in range(4, 17) if len({f"{v:.{d}g}" for v in decimals}) == len(decimals)), 17
    )

    def shown(value: str) -> str:
        return f"{float(value):.{digits}g}" if _is_decimal(value) else value

    folds = any(FOLD_KEY in job["overrides"] for job in jobs)
    labels = {}
    for job in jobs:
        text = " ".join(f"{k}={shown(job['overrides'][k])}" for k in keys if k in job["overrides"])
        labels[job["job"]] = text or ("all folds" if folds else f"job {job['job']}")
    return labels


def _job_label(job: dict[str, Any]) -> str:
    """A job's configuration and, in a k-fold configuration, its fold."""
    fold = job["overrides"].get(FOLD_KEY)
    name = "" if job["configuration"] == "all folds" else job["configuration"]
    return " ".join(filter(None, [name, fold and f"{FOLD_KEY}={fold}"]))


def _decided(pooled: dict[str, Any] | None, group: list[dict[str, Any]]) -> str:
    """A configuration's post-processing and the patients it was decided on."""
    steps = (pooled or group[0])["postprocessing"]
    if steps is None or not pooled and len(group) > 1:
        return "–"
    names = ", ".join(step["name"] for step in steps) or "none"
    if pooled:
        return f"{names}: decided on the {len(pooled['patients'])} patients of its folds pooled"
    return f"{names}: decided on its {len(group[0]['per_patient'])} patients"


def verdict(table: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The report's answer in one line, and the best configuration where the sweep can tell (every
    other configuration worse); None where it cannot compare or finds no difference."""
    best, others = table[0], table[1:]
    top = f"{best['configuration']} has the highest mean DSC ({best['mean']:.4f})"
    if not others:
        return f"{top}, the sweep's only configuration: nothing compared", None
    enough = minimum_patients()
    if any(r["n"] < enough or r["n_paired"] is not None and r["p"] is None for r in table):
        return (
            f"{top}, but this sweep cannot compare configurations scored on fewer than "
            f"{enough} patients: on so few, a two-sided Wilcoxon signed-rank test "
            f"cannot reach p < {LEVEL} whatever the scores, so they get no interval, no p-value "
            "and no verdict; score more patients (e.g. cross-validation folds over "
            "`data.split.fold`)"
        ), None
    same = [r["configuration"] for r in others if r["verdict"] != WORSE]
    if same:
        return f"{top}, not distinguishable from {'; '.join(same)} (level {LEVEL})", None
    return f"{top}; every other configuration is worse (Holm p < {LEVEL})", best["configuration"]


def build_report(sweep_dir: Path) -> dict[str, Any]:
    """The report, nothing written: the jobs, one row per (configuration, patient) of the finished
    jobs, the configurations table (best first), its verdict, the best configuration where the
    sweep can tell (`verdict`) and the Dice the figures show."""
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: sweep directory not found")
    jobs = collect_jobs(sweep_dir)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job, name in zip(jobs, configurations(jobs).values()):
        job["configuration"] = name
        if job["status"] in FINISHED:
            groups[name].append(job)
    rows, about = [], {}
    dice: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, group in groups.items():
        inner = any(job["selection"] == INNER_VAL for job in group)
        pooled = None if inner else pooled_decision([sweep_dir / job["job"] for job in group])
        selection = ",".join(sorted({job["selection"] for job in group}))
        about[name] = {"postprocessing": _decided(pooled, group), "selection": selection}
        for job in group:
            for patient, scores in job["per_patient"].items():
                scores = pooled["metrics"][f"{job['job']}/{patient}"] if pooled else scores
                fold = job["overrides"].get(FOLD_KEY, "")
                row = {"configuration": name, "patient": patient, "fold": fold, "job": job["job"]}
                rows.append({**row, "selection": job["selection"], **scores})
                dice[name][patient].append(scores["dsc"])
    means = {name: {p: float(np.mean(v)) for p, v in dice[name].items()} for name in dice}
    table = compare_configurations(means)
    for entry in table:
        name = entry["configuration"]
        entry.update(about[name], jobs=len(groups[name]))
    report: dict[str, Any] = {"jobs": jobs, "per_patient": rows, "configurations": table}
    report["verdict"], report["best"] = verdict(table) if table else ("no finished job", None)
    # configuration -> patient -> Dice, best configuration first: what the figures show
    report["scores"] = {entry["configuration"]: means[entry["configuration"]] for entry in table}
    return report


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


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in [headers, ["---"] * len(headers), *rows]]


def _markdown(sweep_dir: Path, report: dict[str, Any], shown: list[dict[str, Any]]) -> list[str]:
    """summary.md; `shown`: the jobs as summary.csv lists them (a label for their overrides)."""
    jobs, table = report["jobs"], report["configurations"]
    counts = Counter(sorted((job["status"] for job in jobs), key=STATUSES.index))
    counted = ", ".join(f"{n} {status}" for status, n in counts.items())
    rule = "Rule `inner_val`: `test/dsc_volume` on the held-out patients, training grid."
    rule = f" {rule}" if any(job["selection"] == INNER_VAL for job in jobs) else ""
    lines = [f"# Sweep report: {sweep_dir.name}", "", f"{len(jobs)} jobs: {counted}.{rule}", ""]

    def cell(job: dict[str, Any], key: str) -> str:
        if key == "status":
            return job["status"] + (f" ({job['error']})" if job["error"] else "")
        return _fmt(job[key], 1 if key == "train_seconds" else 4)

    keys = [key for key in JOB_COLUMNS if key != "error"]
    lines += _table([JOB_COLUMNS[k] for k in keys], [[cell(job, k) for k in keys] for job in shown])
    if not table:
        return lines
    pooled = " (cross-validation: every patient scored by the fold that held it out, pooled)"
    explained = (
        f"Mean {VAL_DSC} with its 95% bootstrap CI; Δ: the paired per-patient difference (this "
        f"minus best), two-sided Wilcoxon signed-rank p, Holm-corrected; verdict at level {LEVEL}."
    )
    folds = any(FOLD_KEY in job["overrides"] for job in jobs)
    lines += ["", "## Configurations" + (pooled if folds else ""), "", explained, ""]
    headers = ["configuration", "rule", "jobs", "patients", "post-processing (decided on)"]
    headers += [f"mean {VAL_DSC} [95% CI]", "median", "Δ vs best [95% CI]", "p", "p (Holm)"]
    rows = []
    for r in table:
        low, high = r["difference_ci_low"], r["difference_ci_high"]
        ci = "" if r["difference"] is None else _interval(low, high)
        cells = [_fmt(r[k]) for k in ("configuration", "selection", "jobs", "n", "postprocessing")]
        cells += [f"{r['mean']:.4f} {_interval(r['ci_low'], r['ci_high'])}", _fmt(r["median"])]
        cells.append(f"{_fmt(r['difference'])} {ci}")
        rows.append(cells + [_fmt(r[k]) for k in ("p", "p_holm", "verdict")])
    lines += _table([*headers, "verdict"], rows)
    lines += ["", f"**Verdict**: {report['verdict']}."]
    best = table[0]["configuration"]
    drawn = [job["job"] for job in jobs if job.get("configuration") == best]
    drawn = [job for job in drawn if (sweep_dir / job / FAILURES_FILE).is_file()]
    if drawn:  # each job's worst validation patients, drawn by its final validation
        lines += ["", f"## The worst patients of {best}", ""]
        lines += [f"![job {job}]({job}/{FAILURES_FILE})" for job in drawn]
    lines += ["", "Rules: " + "; ".join(f"`{k}` = {v}" for k, v in CV_RULES.items()) + "."]
    return lines


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv, comparison.csv, summary.md, per_patient.csv, summary.png and heatmap.png
    into the sweep directory; returns `build_report`'s content."""
    sweep_dir = Path(sweep_dir)
    report = build_report(sweep_dir)
    jobs, table, rows = report["jobs"], report["configurations"], report["per_patient"]
    shown = [{**job, "overrides": _job_label(job)} for job in jobs]
    _write_csv(sweep_dir / "summary.csv", list(JOB_COLUMNS), shown)
    _write_csv(sweep_dir / "comparison.csv", COMPARISON_COLUMNS, table)
    columns = ["configuration", "patient", "fold", "job", "selection"]
    _write_csv(sweep_dir / "per_patient.csv", columns + (rows and metric_columns(rows)), rows)
    with atomic_writer(sweep_dir / "summary.md") as fh:
        fh.write("\n".join(_markdown(sweep_dir, report, shown)) + "\n")
    if table:
        scores, title = report["scores"], "Per-volume Dice per patient, best configuration on top"
        strip_box_plot(scores, sweep_dir / "summary.png", title)
        heat_map(scores, sweep_dir / "heatmap.png", "Per-volume Dice: configurations x patients")
    return report


def sweep_jobs(sweep_dir: Path, pick: str | None = None) -> list[Path]:
    """The job folders predict.py `sweep_dir=` ensembles: the finished jobs of a sweep of one
    configuration (e.g. its k folds); `pick=best`: those of the configuration the report ranks
    first, logging which and the report's verdict (which says when the sweep cannot tell)."""
    if pick not in (None, "best"):
        raise ConfigError(f"pick={pick!r} is unknown; choose best, or null for every job")
    report = build_report(sweep_dir)
    names = [row["configuration"] for row in report["configurations"]]
    if not names:
        raise DataError(f"{sweep_dir}: no finished job (a metrics.json with a reported epoch)")
    if pick is None and len(names) > 1:
        raise ConfigError(
            f"sweep_dir: {sweep_dir} holds {len(names)} configurations "
            f"({'; '.join(sorted(names))}), never one ensemble; give pick=best, or checkpoints"
        )
    best, jobs, line = names[0], report["jobs"], report["verdict"]
    chosen = [j["job"] for j in jobs if j["status"] in FINISHED and j["configuration"] == best]
    if pick:
        log.info("pick=best: %s, jobs %s (sweep report: %s)", best, ", ".join(chosen), line)
    return [sweep_dir / job for job in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the report of a train.py -m sweep dir.")
    parser.add_argument("sweep_dir", type=Path)
    sweep_dir, jobs = parser.parse_args(argv).sweep_dir, []

    def run() -> None:
        jobs.extend(write_report(sweep_dir)["jobs"])
        print((sweep_dir / "summary.md").read_text())

    return exit_status(run) or (0 if jobs else 1)


if __name__ == "__main__":
    sys.exit(main())
