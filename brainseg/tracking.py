"""Weights & Biases, in one place: the per-job logger, what its run shows while training, and the
sweep report's run. Lightning and wandb are imported inside the functions, so that reporting can
use this module without the trainer (docs/tracking.md)."""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from brainseg.runfiles import RunMetrics

if TYPE_CHECKING:
    from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("brainseg")
LESION = {1: "lesion"}
MAX_TAG_LENGTH = 64  # W&B refuses longer tags


def wandb_credentials() -> bool:
    """Whether W&B could log online without asking for a key (env var or ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _mode(offline: bool | str) -> str:
    """W&B's mode (and its console quieted): `offline: auto` logs offline when no credentials are
    found, so it never asks for a key."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if offline == "auto":
        offline = not wandb_credentials()
    return "offline" if offline else "online"


def _run_id(path: Path, suffix: str = "") -> str:
    return hashlib.sha1(f"{path.resolve()}{suffix}".encode()).hexdigest()[:16]


def wandb_logger(
    project: str = "brainseg",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    save_dir: str = ".",
    offline: bool | str = "auto",
    tags: Sequence[str] = (),
    shared_overrides: Sequence[str] = (),
    job_type: str = "train",
) -> WandbLogger:
    """A W&B run per job, tagged with `tags` and the overrides every job of the sweep shares. Its
    id is derived from the job's output directory: a job that SLURM requeues into the same
    directory resumes the same W&B run. The mode goes to `wandb.init` too: W&B ignores WANDB_MODE
    once its settings exist in the process (an earlier job of a sweep, the sweep report's run)."""
    from lightning.pytorch.loggers import WandbLogger

    mode = _mode(offline)
    logger = WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=name,
        save_dir=save_dir,
        id=_run_id(Path(save_dir)),
        resume="allow",
        tags=list(dict.fromkeys(t[:MAX_TAG_LENGTH] for t in [*tags, *shared_overrides])),
        job_type=job_type,
        offline=mode == "offline",  # Lightning sets WANDB_MODE (W&B refuses an empty one)
        mode=mode,
    )
    # Lightning always passes `anonymous` (None by default) to wandb.init, which then warns once
    # per run that the setting is deprecated.
    logger._wandb_init.pop("anonymous", None)
    return logger


def log_improvement(
    logger: WandbLogger, scores: dict[str, float], examples: list[dict[str, Any]], step: int
) -> None:
    """When the best epoch improves: the per-patient Dice table and the examples' pictures with
    prediction and truth as toggleable masks (`image` (H, W, 3) uint8, `pred`, `truth`,
    `caption`)."""
    if scores:
        rows = [{"patient": name, "dsc_volume": value} for name, value in scores.items()]
        logger.log_metrics({"val/dsc_volume_per_patient": _table(rows)}, step=step)
    if examples:
        masks = [
            {
                "prediction": {"mask_data": e["pred"].astype(np.uint8), "class_labels": LESION},
                "truth": {"mask_data": e["truth"].astype(np.uint8), "class_labels": LESION},
            }
            for e in examples
        ]
        logger.log_image(
            "val/overlays",
            images=[e["image"] for e in examples],
            step=step,
            masks=masks,
            caption=[e["caption"] for e in examples],
        )


def _table(rows: Sequence[dict[str, Any]]) -> Any:
    """A W&B table of the rows, with the first row's keys as its columns."""
    import wandb

    columns = list(rows[0]) if rows else []
    return wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])


def _finish(run: Any, what: str) -> Path:
    """Close the run, saying where an offline one went; returns its folder."""
    folder, offline = Path(run.dir).parent, run.offline
    run.finish()
    if offline:
        log.info(f"{what} logged offline to {folder}; upload it with: wandb sync {folder}")
    return folder


def finish_run(metrics: RunMetrics) -> None:
    """Log the reported epoch's per-patient table, close this job's W&B run (the next job of a
    sweep in this process gets its own) and say where an offline run went."""
    import wandb

    if (run := wandb.run) is None:
        return
    per_patient = metrics.selected.scores.per_patient_metrics if metrics.selected else {}
    if per_patient:
        rows = [{"patient": name, **values} for name, values in per_patient.items()]
        run.log({"reported/per_patient": _table(rows)})
    _finish(run, "W&B run")


def log_sweep_report(
    sweep_dir: Path, report: dict[str, Any], settings: dict[str, Any] | None
) -> Path | None:
    """Log the sweep report (comparison table, per-patient table, figures, verdict) as one more run,
    `sweep report`, in the sweep's group, with the jobs' `logger.wandb` settings (None: no job
    logged to W&B); offline without credentials, into `<sweep dir>/wandb/`, saying how to upload
    it. Returns the run directory."""
    if settings is None or not report["configurations"]:
        return None
    import wandb

    run = wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        name="sweep report",
        job_type="sweep-report",
        dir=str(sweep_dir),
        mode=_mode(settings.get("offline", "auto")),
        resume="allow",
        reinit="create_new",
        id=_run_id(sweep_dir, ":report"),
    )
    run.log(
        {
            "sweep/comparison": _table(report["configurations"]),
            "sweep/per_patient": _table(report["per_patient"]),
            **{
                f"sweep/{name}": wandb.Image(str(sweep_dir / f"{name}.png"))
                for name in ("summary", "heatmap")
                if (sweep_dir / f"{name}.png").exists()
            },
        }
    )
    # a best configuration only where the report can tell (brainseg.reporting.sweep.verdict)
    best = {"best_configuration": report["best"]} if report["best"] else {}
    run.summary.update({"verdict": report["verdict"], **best})
    return _finish(run, "sweep report")
