"""`hydra/sweeper=optuna`: brainseg's Optuna sweeper, as Hydra's plugin discovery sees it. Its work
is in `_study.py` and `_pruning.py`, which the discovery does not import: commands that run no
search do not load Optuna."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class OptunaConf:
    _target_: str = "hydra_plugins.brainseg_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "maximize"
    study_name: str = "brainseg"
    storage: str | None = None  # null: a journal file in the sweep directory
    n_trials: int = 20  # in the whole study, over every start and process
    n_jobs: int = 1  # trials launched at once (hydra/launcher=local runs them in parallel)
    max_failure_rate: float = 1.0
    sampler: Any = None
    pruner: Any = None
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaConf(), provider="brainseg"
)


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
