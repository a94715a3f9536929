"""`train(cfg)`: compose data, model, loss, optimizer, scheduler, trainer, loggers and callbacks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, ListConfig

from brainseg.config import instantiate_setting, to_plain
from brainseg.data.contract import check_data_module
from brainseg.errors import ConfigError
from brainseg.training.media import WandbMedia
from brainseg.training.module import SegmentationModule
from brainseg.training.report import RunReport
from brainseg.training.speed import apply_speed_settings

log = logging.getLogger("brainseg")


def _instantiate_group(group: str, cfg: DictConfig | None) -> list[Any]:
    """Every entry of a dict-shaped group (callbacks, logger); null entries switch one off."""
    return [instantiate_setting(f"{group}.{name}", node) for name, node in (cfg or {}).items() if node]


def check_sweep_ranks(trainer_cfg: DictConfig) -> None:
    """Refuse the Hydra-multirun + DDP trap: Lightning's default DDP launcher starts the other ranks
    by re-running the whole command line, i.e. the whole sweep, once per rank.

    Safe: ranks started by SLURM (srun tasks, hydra/launcher=slurm) or torchrun, or ddp_spawn.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    several = nodes > 1 or devices == -1 or (isinstance(devices, int) and devices > 1) or isinstance(devices, (list, ListConfig))
    strategy = str(trainer_cfg.get("strategy", "auto"))
    external = int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if several and strategy in ("auto", "ddp", "ddp_find_unused_parameters_true") and not external:
        raise ConfigError(
            f"trainer.strategy={strategy} with several devices inside a -m sweep would re-run the whole sweep "
            "on every rank; use hydra/launcher=slurm (one srun task per device) or trainer.strategy=ddp_spawn"
        )


def _slurm_plugins() -> list[Any]:
    """Under SLURM the job's launcher (submitit) owns requeueing; Lightning's own is switched off."""
    if "SLURM_JOB_ID" not in os.environ:
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def _auto_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    """An explicit ckpt_path, else the run directory's own last.ckpt (a requeued job resumes)."""
    if cfg.get("ckpt_path"):
        path = Path(to_absolute_path(str(cfg.ckpt_path)))
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
        return str(path)
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.get("auto_resume", True) and last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    return None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test) one configuration; returns the content of metrics.json."""
    check_sweep_ranks(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = check_data_module(instantiate_setting("data", cfg.data))
    module = SegmentationModule(
        model=to_plain(cfg.model),
        loss=to_plain(cfg.loss),
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        metric=to_plain(cfg.metric),
        postprocessing=to_plain(cfg.postprocessing),
    )
    apply_speed_settings(module.net, cfg.get("channels_last", False), cfg.get("compile", False))
    report = RunReport(output_dir, to_plain(cfg), cfg.monitor)
    callbacks = _instantiate_group("callbacks", cfg.get("callbacks")) + [report]
    loggers = _instantiate_group("logger", cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(report.config)  # the whole resolved config, not only the module's part
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        callbacks.append(WandbMedia())
    trainer: L.Trainer = instantiate_setting("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                             plugins=_slurm_plugins() or None)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=_auto_resume(cfg, output_dir))
        test_scores = None
        if cfg.get("test") and trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path:
            trainer.test(module, datamodule=datamodule, ckpt_path="best")
            test_scores = module.volume_scores.get("test")
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()  # the next job of a sweep in this process gets its own run
    metrics = report.write_metrics(trainer, test_scores) if trainer.is_global_zero else {}
    if metrics.get("best"):
        best = metrics["best"]
        median = best["dsc_volume_median"]
        log.info(
            "best %s: mean %.4f, median %s (epoch %d, %d patients); run in %s", cfg.monitor, best["dsc_volume_mean"],
            "-" if median is None else f"{median:.4f}", best["epoch"], len(best["per_patient"]), output_dir,
        )
    return metrics
