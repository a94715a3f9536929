"""Every Hydra callback of train.py and predict.py (conf/hydra/default.yaml lists them): what is
refused before Hydra writes, and what guards a sweep (docs/safety.md, docs/sweeps.md)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from brainseg.cli import Stopped
from brainseg.config import SWEPT_KEYS_ENV, in_multirun, instantiate_setting, swept_keys, to_plain
from brainseg.data.reader import find_patients
from brainseg.errors import BrainsegError, ConfigError
from brainseg.paths import check_outside_inputs
from brainseg.run_lock import LOCK_NAME, claim_run_directory, is_first_rank
from brainseg.runfiles import CONFIG_FILE, METRICS_FILE


def _exit(line: str, status: int = 2) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def _refuse(check: Callable[[], object]) -> None:
    """Run a check before Hydra writes; a BrainsegError becomes `error: ...` and exit status 2."""
    try:
        check()
    except BrainsegError as exc:
        _exit(f"error: {exc}")


class RefuseOutputDirectory(Callback):
    """Before Hydra creates a run directory (and writes .hydra/ and a log there): refuse one that
    overlaps data.root, a data.root without patients, a directory a live process holds, or one
    holding a run this start does not resume (its checkpoints would go); else claim it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = self._outside_data(config, "hydra.run.dir")
        if "data" in config:  # train.py: before the model is built; a failed start leaves nothing
            _refuse(lambda: find_patients(Path.cwd() / str(config.data.root)))
        if is_first_rank():  # DDP ranks run in rank 0's directory
            _refuse(lambda: claim_run_directory(run_dir))
            if "auto_resume" in config:  # train.py
                _refuse(lambda: _check_resumed(config, run_dir))

    @staticmethod
    def _outside_data(config: DictConfig, key: str) -> Path:
        folder = Path.cwd() / str(OmegaConf.select(config, key))
        root = OmegaConf.select(config, "data.root")
        if root is not None:
            inputs = {"data.root": Path.cwd() / str(root)}
            _refuse(lambda: check_outside_inputs(folder, key, inputs))
        return folder


def _check_resumed(config: DictConfig, run_dir: Path) -> None:
    """A run directory holding a run is trained into only by resuming it from its last.ckpt."""
    from brainseg.training.pipeline import last_checkpoint

    last, ckpt = last_checkpoint(run_dir), config.get("ckpt_path")
    resumed = (Path.cwd() / ckpt).resolve() == last.resolve() if ckpt else config.auto_resume
    run = next((p for p in [run_dir / METRICS_FILE, *last.parent.glob("*.ckpt")] if p.is_file()), 0)
    if run and not (resumed and last.is_file()):
        raise ConfigError(
            f"{run_dir}: holds a run ({run}); resume it (auto_resume=true, or "
            f"ckpt_path={last}) or choose another hydra.run.dir"
        )


def _check_targets(group: str, entries: Any) -> None:
    """Each entry's `_target_` of a dict-shaped group (callbacks, logger) can be imported; the
    entries themselves are built by the jobs (they name the job's own directory)."""
    for name, node in (entries or {}).items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            continue
        module, _, attribute = str(target).rpartition(".")
        try:  # not pydoc.locate: in a sweep it finds no hydra_plugins.brainseg_sweeper._pruning
            found = hasattr(importlib.import_module(module), attribute)
        except (ImportError, ValueError):  # ValueError: an empty module name
            found = False
        if not found:
            raise ConfigError(f"{group}.{name}._target_: cannot import {target!r}")


def preflight(config: DictConfig, swept: list[str]) -> None:
    """Build once what every job shares, as the first job would, so that a shared mistake stops the
    sweep once instead of failing every job; the groups the sweep varies are left to the jobs."""
    import torch  # here, after SweepGuard has quieted the libraries

    from brainseg.losses import build_loss
    from brainseg.metrics.monitor import higher_is_better
    from brainseg.models import build_model
    from brainseg.postprocessing import check_steps
    from brainseg.training.pipeline import checkpoint_file

    def shared(group: str) -> bool:
        touched = any(k == group or k.startswith((f"{group}.", f"{group}/")) for k in swept)
        return group in config and config[group] is not None and not touched

    HydraConfig.instance().set_config(config)  # for ${hydra:...} in the settings, as in a job
    if shared("data"):
        instantiate_setting("data", config.data).validate()
    model = build_model(**to_plain(config.model)) if shared("model") else None
    if "trainer" not in config:  # predict.py: its data and model are all that jobs share
        return
    if shared("monitor"):
        higher_is_better(config.monitor)
    if shared("ckpt_path"):
        checkpoint_file(config)
    if shared("loss"):
        build_loss(**to_plain(config.loss))
    if shared("postprocessing"):
        check_steps(to_plain(config.postprocessing))
    params = model.parameters() if model is not None else [torch.nn.Parameter(torch.zeros(1))]
    if shared("optimizer"):
        optimizer = instantiate_setting("optimizer", config.optimizer, params=params)
    else:  # the scheduler is checked on a stand-in for the optimizers the jobs build
        optimizer = torch.optim.SGD(params, lr=0.1)
    factory = shared("scheduler") and to_plain(config.scheduler).get("scheduler")
    if factory:
        if "total_steps" in factory and factory["total_steps"] is None:  # the trainer fills it in
            factory["total_steps"] = 1
        instantiate_setting("scheduler", factory, optimizer=optimizer)
    for group in ("callbacks", "logger"):
        if shared(group):
            _check_targets(group, config[group])


def check_sweep_directory(config: DictConfig) -> None:
    """An existing `hydra.sweep.dir` with content is resumed only if its multirun.yaml names the
    same entry point and sweeper."""
    sweep = Path(str(config.hydra.sweep.dir))
    if not sweep.is_dir() or not any(p.name != LOCK_NAME for p in sweep.iterdir()):
        return
    recorded = sweep / "multirun.yaml"
    if not recorded.is_file():
        raise ConfigError(
            f"hydra.sweep.dir={sweep}: not a sweep directory (no multirun.yaml); give an "
            "existing sweep to resume it, or a new directory"
        )
    old = OmegaConf.load(recorded).hydra
    for key in ("job.name", "sweeper._target_"):
        before, now = OmegaConf.select(old, key), OmegaConf.select(config.hydra, key)
        if before != now:
            raise ConfigError(
                f"hydra.sweep.dir={sweep}: a sweep with hydra.{key}={before}, not {now}; "
                "resume a sweep with its own command, or choose a new directory"
            )


class SweepGuard(Callback):
    """Around a multirun: pre-flight checks before the first job; the sweep report refreshed after
    each job (a long or crashed sweep still has one); at the end, non-zero if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.quiet import quiet_libraries

        quiet_libraries()
        swept = swept_keys(config)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)
        RefuseOutputDirectory._outside_data(config, "hydra.sweep.dir")  # before the claim writes
        try:
            check_sweep_directory(config)
            claim_run_directory(Path.cwd() / str(config.hydra.sweep.dir), "hydra.sweep.dir")
            preflight(config, swept)
        except BrainsegError as exc:
            _exit(f"error: {exc} (checked before the sweep started; no job was run)")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """The report refreshed; a job stopped by SIGTERM or SIGINT then stops the sweep."""
        from brainseg.reporting.sweep import write_report

        if in_multirun() and Path(config.hydra.sweep.dir).is_dir():
            write_report(config.hydra.sweep.dir)
        stop = job_return._return_value  # the public property re-raises a failed job's error
        if isinstance(stop, Stopped):
            summary = Path(config.hydra.sweep.dir) / "summary.md"
            _exit(
                f"error: job {config.hydra.job.num} {stop}; the jobs run so far: {summary}",
                stop.exit_status,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from brainseg.reporting.sweep import write_report
        from brainseg.tracking import log_sweep_report

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        report = write_report(sweep_dir)
        jobs = report["jobs"]
        files = (sweep_dir / job["job"] / CONFIG_FILE for job in jobs)
        logged = (
            ((yaml.safe_load(f.read_text()) or {}).get("logger") or {}).get("wandb")
            for f in files
            if f.is_file()
        )
        # the `logger.wandb` settings of the first job that logged to W&B (None: no job did)
        log_sweep_report(sweep_dir, report, next(filter(None, logged), None))
        print(f"sweep report: {sweep_dir / 'summary.md'} ({len(jobs)} jobs)")
        failed = [j for j in jobs if j["status"] in ("failed", "interrupted")]
        if failed:
            _exit(f"{len(failed)} of {len(jobs)} jobs failed: see {sweep_dir / 'summary.md'}", 1)
