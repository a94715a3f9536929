"""Optuna pruning (docs/sweeps.md#optuna): reports each epoch's `monitor` value to the job's trial
and ends the training after an epoch the study's pruner prunes (exit 0, `pruned.json`)."""

import logging
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from brainseg.runfiles import Pruned, write_pruned
from brainseg.training.checkpoints import epoch_cut
from hydra_plugins.brainseg_sweeper._study import open_storage

log = logging.getLogger("brainseg")


class OptunaPruning(L.Callback):
    """Inactive outside an Optuna sweep with a pruner."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.trial: optuna.Trial | None = None
        self.job_dir = Path()

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        if hydra is None or not hydra.sweeper.get("pruner") or not trainer.is_global_zero:
            return
        settings, sweep_dir = hydra.sweeper, Path(hydra.sweep.dir)
        storage = open_storage(settings.storage, sweep_dir)
        pruner = instantiate(settings.pruner)
        study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=pruner)
        self.job_dir = Path(hydra.runtime.output_dir).resolve()
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        (trial,) = [t for t in running if t.user_attrs.get("job_dir") == str(self.job_dir)]
        self.trial = optuna.Trial(study, trial._trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if self.trial is None or trainer.sanity_checking or value is None or epoch_cut(trainer):
            return  # a cut epoch's figure is no epoch's: the run neither reports nor keeps it
        epoch, value = trainer.current_epoch + 1, float(value)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            log.info("trial %d pruned after epoch %d (%s)", self.trial.number, epoch, self.monitor)
            write_pruned(self.job_dir, Pruned(epoch, value))
            trainer.should_stop = True
