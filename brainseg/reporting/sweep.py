"""The sweep report: one row per job of a Hydra multirun (overrides, best per-volume Dice, epoch,
train time, status), cross-validated means over `data.split.fold`, and a bar chart.

Written by a Hydra callback at the end of every multirun, and rebuilt any time with
`python -m brainseg.reporting.sweep <sweep dir>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from brainseg.cli import FAILURE_FILE
from brainseg.reporting.figures import bar_chart

FOLD_KEY = "data.split.fold"


def _overrides(job: Path) -> dict[str, str]:
    items = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder (holding .hydra/overrides.yaml) of the sweep, in job order."""
    jobs = []
    folders = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()]
    for job in sorted(folders, key=lambda p: (len(p.name), p.name)):
        row: dict[str, Any] = {"job": job.name, "overrides": _overrides(job), "status": "incomplete",
                               "dsc_volume_mean": None, "dsc_volume_median": None, "best_epoch": None,
                               "train_seconds": None, "error": ""}
        if (job / "metrics.json").exists():
            metrics = json.loads((job / "metrics.json").read_text())
            best = metrics.get("best") or {}
            row.update(status="ok" if best else "no validation", dsc_volume_mean=best.get("dsc_volume_mean"),
                       dsc_volume_median=best.get("dsc_volume_median"), best_epoch=best.get("epoch"),
                       train_seconds=metrics.get("train_seconds"))
        elif (job / FAILURE_FILE).exists():
            failure = json.loads((job / FAILURE_FILE).read_text())
            row.update(status="failed", error=f"{failure['type']}: {failure['error']}".splitlines()[0])
        jobs.append(row)
    return jobs


def _varying(jobs: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs (all keys for a single job)."""
    keys = sorted({k for j in jobs for k in j["overrides"]})
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]


def _label(job: dict[str, Any], keys: list[str], fallback: str | None = None) -> str:
    text = " ".join(f"{k}={job['overrides'][k]}" for k in keys if k in job["overrides"])
    return text or (fallback if fallback is not None else f"job {job['job']}")


def cross_validation(jobs: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Mean and std of the best Dice over the folds of each configuration (jobs differing in data.split.fold)."""
    if FOLD_KEY not in keys:
        return []
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        groups[_label(job, [k for k in keys if k != FOLD_KEY], fallback="all folds")].append(job)
    rows = []
    for label, members in groups.items():
        scores = [j["dsc_volume_mean"] for j in members if j["status"] == "ok"]
        rows.append({"configuration": label, "folds": len(members), "folds_ok": len(scores),
                     "cv_dsc_mean": float(np.mean(scores)) if scores else None,
                     "cv_dsc_std": float(np.std(scores)) if scores else None})
    return rows


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """Write to a temporary file and rename it over `path`: parallel jobs never see half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        yield fh
    os.replace(tmp, path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv, summary.md and summary.png into the sweep directory."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    keys = _varying(jobs)
    columns = ["job", "overrides", "status", "dsc_volume_mean", "dsc_volume_median", "best_epoch", "train_seconds", "error"]
    with _atomic(sweep_dir / "summary.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for job in jobs:
            writer.writerow({**{c: job[c] for c in columns}, "overrides": _label(job, keys)})
    cv = cross_validation(jobs, keys)
    lines = [f"# Sweep report: {sweep_dir.name}", "",
             (f"{len(jobs)} jobs, {sum(j['status'] == 'ok' for j in jobs)} ok, "
              f"{sum(j['status'] == 'failed' for j in jobs)} failed. Best validation per-volume Dice (val/dsc_volume)."), "",
             "| job | overrides | status | best mean DSC | best median DSC | epoch | train s |",
             "|---|---|---|---|---|---|---|"]
    for job in jobs:
        status = job["status"] + (f" ({job['error']})" if job["error"] else "")
        lines.append(f"| {job['job']} | {_label(job, keys)} | {status} | {_fmt(job['dsc_volume_mean'])} | "
                     f"{_fmt(job['dsc_volume_median'])} | {_fmt(job['best_epoch'])} | {_fmt(job['train_seconds'], 1)} |")
    if cv:
        lines += ["", "## Cross-validation (over data.split.fold)", "", "| configuration | folds | mean DSC | std |", "|---|---|---|---|"]
        lines += [f"| {r['configuration']} | {r['folds_ok']}/{r['folds']} | {_fmt(r['cv_dsc_mean'])} | {_fmt(r['cv_dsc_std'])} |" for r in cv]
    with _atomic(sweep_dir / "summary.md") as fh:
        fh.write("\n".join(lines) + "\n")
    scores = {_label(j, keys): j["dsc_volume_mean"] for j in jobs if j["status"] == "ok"}
    if scores:
        bar_chart(scores, sweep_dir / "summary.png", title="Best validation per-volume Dice per job", show_stats=False)
    return {"jobs": jobs, "cross_validation": cv}


class SweepReport(Callback):
    """Hydra callback: the sweep report, refreshed after each job (so a long or crashed sweep still
    has one) and written at the end of every multirun."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and Path(config.hydra.sweep.dir).is_dir():
            write_report(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            report = write_report(sweep_dir)
            print(f"sweep report: {sweep_dir / 'summary.md'} ({len(report['jobs'])} jobs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the report of a train.py -m sweep directory.")
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir}: sweep directory not found", file=sys.stderr)
        return 2
    report = write_report(sweep_dir)
    print((sweep_dir / "summary.md").read_text())
    return 0 if report["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
