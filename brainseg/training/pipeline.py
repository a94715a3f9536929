"""`train(cfg)`: compose data, model, loss, optimizer, scheduler, trainer, loggers and callbacks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from brainseg.config import instantiate_setting, to_plain
from brainseg.errors import ConfigError
from brainseg.training.media import WandbMedia
from brainseg.training.module import SegmentationModule
from brainseg.training.report import RunReport

log = logging.getLogger("brainseg")


def _resume_path(ckpt_path: str | None) -> str | None:
    if not ckpt_path:
        return None
    path = Path(to_absolute_path(str(ckpt_path)))
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such checkpoint file")
    return str(path)


def _instantiate_group(group: str, cfg: DictConfig | None) -> list[Any]:
    """Every entry of a dict-shaped group (callbacks, logger); null entries switch one off."""
    return [instantiate_setting(f"{group}.{name}", node) for name, node in (cfg or {}).items() if node]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test) one configuration; returns the content of metrics.json."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate_setting("data", cfg.data)
    module = SegmentationModule(
        model=to_plain(cfg.model),
        loss=to_plain(cfg.loss),
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        metric=to_plain(cfg.metric),
    )
    report = RunReport(output_dir, to_plain(cfg))
    callbacks = _instantiate_group("callbacks", cfg.get("callbacks")) + [report]
    loggers = _instantiate_group("logger", cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(report.config)  # the whole resolved config, not only the module's part
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        callbacks.append(WandbMedia())
    trainer: L.Trainer = instantiate_setting("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=_resume_path(cfg.get("ckpt_path")))
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
        log.info(
            "best val/dsc_volume: mean %.4f, median %.4f (epoch %d, %d patients); run in %s",
            best["dsc_volume_mean"], best["dsc_volume_median"], best["epoch"], len(best["per_patient"]), output_dir,
        )
    return metrics
