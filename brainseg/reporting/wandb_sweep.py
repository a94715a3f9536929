"""The sweep report as one extra W&B run in the sweep's group, so the dashboard shows the CI and
significance columns and the per-patient figures next to the job runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

from brainseg.tracking import wandb_credentials


def _wandb_settings(sweep_dir: Path, jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `logger.wandb` settings of the first job that logged to W&B (None: no job did)."""
    for job in jobs:
        config_file = sweep_dir / job["job"] / "config.yaml"
        if config_file.is_file():
            settings = ((yaml.safe_load(config_file.read_text()) or {}).get("logger") or {}).get(
                "wandb"
            )
            if settings:
                return settings
    return None


def log_sweep_report(sweep_dir: Path, report: dict[str, Any]) -> Path | None:
    """Log the comparison table, the per-patient table and the figures as a `sweep-report` run
    (offline without credentials, into `<sweep dir>/wandb/`); returns the run directory."""
    settings = _wandb_settings(sweep_dir, report["jobs"])
    if settings is None or not report["configurations"]:
        return None
    import wandb

    offline = settings.get("offline", "auto")
    offline = not wandb_credentials() if offline == "auto" else bool(offline)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        name="sweep report",
        job_type="sweep-report",
        dir=str(sweep_dir),
        mode="offline" if offline else "online",
        resume="allow",
        reinit="create_new",
        id=hashlib.sha1(f"{sweep_dir.resolve()}:report".encode()).hexdigest()[:16],
    )
    table = report["configurations"]
    columns = list(table[0])
    per_patient = report["per_patient"]
    patient_columns = list(per_patient[0]) if per_patient else []
    run.log(
        {
            "sweep/comparison": wandb.Table(
                columns=columns, data=[[row[c] for c in columns] for row in table]
            ),
            "sweep/per_patient": wandb.Table(
                columns=patient_columns,
                data=[[row.get(c) for c in patient_columns] for row in per_patient],
            ),
            **{
                f"sweep/{name}": wandb.Image(str(sweep_dir / f"{name}.png"))
                for name in ("summary", "heatmap")
                if (sweep_dir / f"{name}.png").exists()
            },
        }
    )
    run.summary.update(
        {"best_configuration": table[0]["configuration"], "best_mean_dsc": table[0]["mean"]}
    )
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
