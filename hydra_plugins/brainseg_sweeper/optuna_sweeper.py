"""`hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml; its settings: conf/hparams_search/
optuna.yaml): brainseg's Optuna sweeper, as Hydra's plugin discovery sees it. Its work
is in `_study.py` and `_pruning.py`, which the discovery does not import: commands that run no
search do not load Optuna."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hands the search to `_study.StudySweeper`, imported when a search starts."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.brainseg_sweeper._study import StudySweeper

        self.study = StudySweeper(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.study.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.study.sweep(arguments)
