"""`hydra/sweeper=optuna` (docs/sweeps.md#optuna) as Hydra's plugin discovery sees it; the search,
in `_study.py` (not discovered), imports Optuna: commands that run no search do not load it."""

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # hydra.sweeper (conf/hparams_search/optuna.yaml), instantiated

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.brainseg_sweeper._study import search

        search(self.settings, self.config, self.launcher, arguments)
