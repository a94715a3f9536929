"""`train(cfg)`: compose data, model, loss, optimizer, scheduler, trainer, loggers and callbacks."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import to_absolute_path
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig

from brainseg.checkpoint import load_weights, read_checkpoint, remove_temporary_files
from brainseg.cli import Stopped
from brainseg.config import in_multirun, instantiate_setting, job_overrides, to_plain
from brainseg.data.contract import check_data_module
from brainseg.errors import ConfigError, DataError
from brainseg.evaluation.folds import inner_validation
from brainseg.metrics.monitor import higher_is_better
from brainseg.paths import check_outside_inputs
from brainseg.postprocessing import StepList, check_steps
from brainseg.quiet import quiet_libraries
from brainseg.run_lock import claim_run_directory, is_first_rank, release_run_directory
from brainseg.runfiles import RunMetrics, write_metrics
from brainseg.tracking import finish_run
from brainseg.training.checkpoints import LAST_NAME, AtomicCheckpointIO, LastCheckpoint
from brainseg.training.final_validation import final_validation
from brainseg.training.media import TrackerMedia, log_reported
from brainseg.training.module import SegmentationModule
from brainseg.training.report import RunReport
from brainseg.training.speed_settings import apply_speed_settings

log = logging.getLogger("brainseg")


def _instantiate_group(group: str, cfg: DictConfig | None) -> list[Any]:
    """Every entry of a dict-shaped group (callbacks, logger); null entries switch one off."""
    return [
        instantiate_setting(f"{group}.{name}", node) for name, node in (cfg or {}).items() if node
    ]


def check_sweep_ranks(trainer_cfg: DictConfig) -> None:
    """Refuse the Hydra-multirun + DDP trap: Lightning's default DDP launcher starts the other ranks
    by re-running the whole command line, i.e. the whole sweep, once per rank. Safe: ranks started
    by SLURM (srun tasks, hydra/launcher=slurm) or torchrun, or ddp_spawn."""
    if not in_multirun():
        return
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    several = (
        nodes > 1
        or devices == -1
        or (isinstance(devices, int) and devices > 1)
        or isinstance(devices, (list, ListConfig))
    )
    strategy = str(trainer_cfg.get("strategy", "auto"))
    external = int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if several and strategy in ("auto", "ddp", "ddp_find_unused_parameters_true") and not external:
        raise ConfigError(
            f"trainer.strategy={strategy} with several devices inside a -m sweep "
            "would re-run the whole sweep on every rank; use hydra/launcher=slurm "
            "(one srun task per device) or trainer.strategy=ddp_spawn"
        )


def last_checkpoint(output_dir: Path) -> Path:
    """The run directory's own last.ckpt, which auto_resume resumes from."""
    return output_dir / "checkpoints" / f"{LAST_NAME}.ckpt"


def _resume_hint(cfg: DictConfig, output_dir: Path) -> str:
    last = last_checkpoint(output_dir)
    if not last.is_file():
        return "no checkpoint was saved yet"
    if cfg.get("auto_resume", True) and not in_multirun():
        return f"run the same command again to resume from {last} (auto_resume)"
    return f"resume with ckpt_path={last}"


def checkpoint_file(cfg: DictConfig) -> Path:
    """`ckpt_path`, resolved against the launch directory; a ConfigError if no such file."""
    path = Path(to_absolute_path(str(cfg.ckpt_path)))
    if not path.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
    return path


def _auto_resume(cfg: DictConfig, output_dir: Path, module: SegmentationModule) -> str | None:
    """An explicit ckpt_path, else the run directory's own last.ckpt (a requeued job resumes),
    checked first so that a torn, foreign or other-architecture file is named in one line."""
    if cfg.get("ckpt_path"):
        path = checkpoint_file(cfg)
    else:
        path = last_checkpoint(output_dir)
        if not (cfg.get("auto_resume", True) and path.is_file()):
            return None
    checkpoint = read_checkpoint(path)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise DataError(f"{path}: holds weights only (a best checkpoint); resume from a last.ckpt")
    load_weights(module, checkpoint["state_dict"], path, dict(module.hparams.model))
    # Lightning counts epochs from 0; a last.ckpt holds the epoch it was saved in.
    log.info("resuming from %s (saved in epoch %d)", path, checkpoint.get("epoch", -1) + 1)
    return str(path)


def train(cfg: DictConfig) -> RunMetrics | None:
    """Fit (and optionally test) one configuration; returns the content of metrics.json (None on
    ranks other than 0)."""
    quiet_libraries()
    check_sweep_ranks(cfg.trainer)
    higher_is_better(cfg.monitor)  # a ConfigError before any work if it is not a logged metric
    steps = check_steps(to_plain(cfg.get("postprocessing")), "postprocessing")
    L.seed_everything(cfg.seed, workers=True)
    candidates = [  # the step lists the post-processing is chosen among after training
        check_steps(c, f"postprocessing_candidates[{i}]")
        for i, c in enumerate(to_plain(cfg.get("postprocessing_candidates")) or [])
    ] or [steps]
    output_dir = Path(cfg.paths.output_dir)
    if cfg.data.get("root"):
        check_outside_inputs(
            output_dir, "paths.output_dir", {"data.root": to_absolute_path(str(cfg.data.root))}
        )
    if not is_first_rank():
        return _fit(cfg, output_dir, candidates)
    claimed = claim_run_directory(output_dir)  # False: held already, from before Hydra wrote
    remove_temporary_files(output_dir / "checkpoints")
    try:
        return _fit(cfg, output_dir, candidates)
    except BaseException as exc:  # Lightning's SIGTERMException when submitit owns SIGTERM
        stop: BaseException | None = exc  # or replaced by a data-loader worker's death
        while stop is not None and not isinstance(stop, (Stopped, SIGTERMException)):
            stop = stop.__context__
        if stop is None:
            raise
        raise Stopped(getattr(stop, "signum", signal.SIGTERM), _resume_hint(cfg, output_dir))
    finally:
        if claimed:
            release_run_directory(output_dir)


def _fit(cfg: DictConfig, output_dir: Path, candidates: list[StepList]) -> RunMetrics | None:
    """The run itself, in a run directory no other process writes to."""
    datamodule = check_data_module(instantiate_setting("data", cfg.data))
    parts = ("model", "loss", "optimizer", "scheduler", "metric", "postprocessing")
    module = SegmentationModule(**{part: to_plain(cfg[part]) for part in parts})
    parameters = sum(p.numel() for p in module.parameters()) / 1e6
    log.info(
        f"model: {cfg.model.arch}, encoder {cfg.model.encoder_name}, {parameters:.1f} M parameters"
    )
    apply_speed_settings(module.net, cfg.get("channels_last", False), cfg.get("compile", False))
    # A progress bar on a terminal; in a log file (a SLURM `.out`), one line per epoch instead.
    progress_bar = cfg.trainer.get("enable_progress_bar", sys.stdout.isatty())
    report = RunReport(output_dir, to_plain(cfg), cfg.monitor, progress_lines=not progress_bar)
    callbacks = [*_instantiate_group("callbacks", cfg.get("callbacks")), report]
    loggers = _instantiate_group("logger", cfg.get("logger"))
    swept, _ = job_overrides()
    sweep_keys = {f"sweep/{o.split('=', 1)[0].lstrip('+~')}": o.split("=", 1)[1] for o in swept}
    for logger in loggers:  # the resolved config + the swept keys on top
        logger.log_hyperparams({**report.config, **sweep_keys})
    if any(isinstance(logger, (WandbLogger, TensorBoardLogger)) for logger in loggers):
        callbacks.append(TrackerMedia(report))
    plugins: list[Any] = [AtomicCheckpointIO()]  # atomic checkpoint writes
    if "SLURM_JOB_ID" in os.environ:  # the job's launcher (submitit) owns requeueing, not Lightning
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer: L.Trainer = instantiate_setting(
        "trainer",
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=plugins,
        enable_progress_bar=progress_bar,
    )
    try:
        try:
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=_auto_resume(cfg, output_dir, module)
            )
        except BaseException:
            if trainer.is_global_zero and report.history:  # the epochs so far
                write_metrics(output_dir, report.run_metrics(trainer))
            raise
        best = report.checkpoint_paths(trainer)["best"]
        # the inner-validation rule scores each fold's held-out patients as its test set
        if best and (cfg.get("test") or inner_validation(report.config)):
            trainer.test(module, datamodule=datamodule, ckpt_path=best)
        if trainer.is_global_zero:
            selected = report.run_metrics(trainer).selected
            if selected and selected.checkpoint:
                final = final_validation(cfg, trainer, selected.checkpoint, candidates)
                report.adopt_final_validation(final)
            log_reported(trainer.loggers, report.run_metrics(trainer), trainer.global_step)
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            finish_run(report.run_metrics(trainer))
    if not trainer.is_global_zero:
        return None
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint):
            callback.job_succeeded()
    metrics = dataclasses.replace(report.run_metrics(trainer), finished=True)
    write_metrics(output_dir, metrics)
    if metrics.best is not None and metrics.headline is not None:
        reported, name = metrics.selected, cfg.monitor.removeprefix("val/")
        steps = [step["name"] for step in reported.postprocessing or []]
        log.info(
            f"reported/{name} {metrics.headline:.4f} (evaluation.selection={reported.rule}: "
            f"{reported.description}; epoch {reported.scores.epoch}, "
            f"{reported.geometry or 'training grid'}, postprocessing={steps}); best_on_val/{name} "
            f"{metrics.best.value(cfg.monitor):.4f} (epoch {metrics.best.epoch}, training grid, "
            f"selected on validation); run in {output_dir}"
        )
        if reported.checkpoint and not in_multirun():  # a sweep's next step: its report
            log.info(
                f"next: python predict.py input={cfg.data.root} checkpoints={reported.checkpoint} "
                f"output_dir={output_dir / 'predictions'}"
            )
    if (test := metrics.test) is not None:
        log.info(
            f"test (rule {test.rule}, the checkpoint best on validation): dsc_volume mean "
            f"{test.dsc_volume_mean:.4f}, median {test.dsc_volume_median:.4f} "
            f"({len(test.per_patient)} patients)"
        )
    return metrics
