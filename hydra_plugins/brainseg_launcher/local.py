"""`hydra/launcher=brainseg_basic` (the default): Hydra's basic launcher, one job after another in
this process, that resumes a sweep: re-running its command with `hydra.sweep.dir=<the sweep>`
reuses the jobs whose record is complete (metrics.json with a reported epoch) and whose config is
the recorded one, runs the others (an interrupted job continues from its last.ckpt, train.py's
auto_resume) and refuses a job whose config differs, naming the setting."""

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, setup_globals
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from brainseg.errors import DataError
from brainseg.runfiles import read_metrics

log = logging.getLogger("brainseg")


@dataclass
class BasicConf:
    _target_: str = "hydra_plugins.brainseg_launcher.local.ResumingLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="brainseg_basic", node=BasicConf(), provider="brainseg"
)


def stop_sweep(message: str) -> None:
    """Stop the sweep with one `error: ...` line and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a plain config tree."""
    if not isinstance(node, dict):
        return {prefix: node}
    items = [_flat(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items()]
    return {k: v for item in items for k, v in item.items()}


def reused_return(job_config: DictConfig) -> JobReturn | None:
    """The finished job's JobReturn (its best `monitor` value, as train.py returns it) when its
    directory holds a complete record; None when it must run. A job recorded with another config
    stops the sweep with one line naming the first setting that differs."""
    job_dir = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
    recorded = job_dir / ".hydra" / "config.yaml"
    if not recorded.is_file():
        return None
    task = OmegaConf.masked_copy(job_config, [k for k in job_config if k != "hydra"])
    old = _flat(OmegaConf.to_container(OmegaConf.load(recorded)))
    new = _flat(OmegaConf.to_container(task))
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if changed:
        key = changed[0]
        stop_sweep(
            f"{job_dir}: job {job_config.hydra.job.num} was run with {key}={old.get(key)!r}, "
            f"this command gives {key}={new.get(key)!r}; resume a sweep with its own command, "
            "or choose a new hydra.sweep.dir"
        )
    try:
        metrics = read_metrics(job_dir)
    except DataError:  # torn by a kill: the job runs again
        return None
    if metrics is None or metrics.reported is None:
        return None
    log.info("job %s: finished before, reused (%s)", job_config.hydra.job.num, job_dir)
    return JobReturn(
        overrides=list(job_config.hydra.overrides.task),
        cfg=task,
        hydra_cfg=job_config,
        working_dir=str(job_dir),
        task_name=str(job_config.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=metrics.best.value(metrics.monitor) if metrics.best else None,
    )


class ResumingLauncher(BasicLauncher):
    """Hydra's basic launcher, reusing the jobs a resumed sweep already finished."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        returns: dict[int, JobReturn] = {}
        pending: list[tuple[int, Sequence[str]]] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            job_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(job_config):
                job_config.hydra.job.id = job_config.hydra.job.num = idx
            reused = reused_return(job_config)
            if reused is None:
                pending.append((idx, overrides))
            else:
                returns[idx] = reused
        for idx, overrides in pending:
            (returns[idx],) = super().launch([overrides], initial_job_idx=idx)
        return [returns[idx] for idx in sorted(returns)]


class RefuseForeignSweepDir(Callback):
    """An existing `hydra.sweep.dir` with content must be a sweep of the same entry point and
    sweeper (its multirun.yaml says so): resuming it; anything else is refused in one line before
    Hydra writes there."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if not sweep.is_dir() or not any(sweep.iterdir()):
            return
        recorded = sweep / "multirun.yaml"
        if not recorded.is_file():
            stop_sweep(
                f"hydra.sweep.dir={sweep}: not a sweep directory (no multirun.yaml); give an "
                "existing sweep to resume it, or a new directory"
            )
        old = OmegaConf.load(recorded).hydra
        for key in ("job.name", "sweeper._target_"):
            before, now = OmegaConf.select(old, key), OmegaConf.select(config.hydra, key)
            if before != now:
                stop_sweep(
                    f"hydra.sweep.dir={sweep}: a sweep with hydra.{key}={before}, not {now}; "
                    "resume a sweep with its own command, or choose a new directory"
                )
