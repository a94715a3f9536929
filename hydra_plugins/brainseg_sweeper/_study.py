"""The Optuna sweeper's work (configured in optuna_sweeper.py): ask the study for trials, launch
them as jobs, tell it their results. The study lives in the sweep's journal file, or in a database
that several sweeper processes share; `n_trials` is the study's total. A trial's job directory is
its `job_dir` user attribute, named by its trial number."""

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from brainseg.runfiles import read_pruned
from hydra_plugins.brainseg_launcher.local import stop_sweep

log = logging.getLogger("brainseg")
JOURNAL_FILE = "optuna.journal"


def open_storage(url: str | None, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage: the sweep's journal file, or a database (one line if unreachable)."""
    if url is None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL_FILE))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            shown = "(not a database URL)"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        stop_sweep(f"hydra.sweeper.storage={shown}: cannot open the study's database: {reason}")
        raise


def distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep: choice or range (each value a choice), or
    interval (`log` tag: sampled on a log scale)."""
    if override.is_choice_sweep() or override.is_range_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    value = override.value()
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


class StudySweeper(Sweeper):
    """Asks the study for trials, launches them as jobs, tells it their results."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _study(self, space: dict[str, BaseDistribution], sweep_dir: Path) -> optuna.Study:
        """The study, created or loaded; one line if it was created with another direction or
        search space, or the pruner is not an Optuna pruner."""
        s = self.settings
        pruner = s["pruner"] or optuna.pruners.NopPruner()  # built by Hydra from its _target_
        if not isinstance(pruner, optuna.pruners.BasePruner):
            stop_sweep(f"hydra.sweeper.pruner: {type(pruner).__name__} is not an Optuna pruner")
        if s["storage"] is not None and s["sampler"] is not None:
            s["sampler"].reseed_rng()  # processes sharing a study must not draw the same trials
        study = optuna.create_study(
            storage=open_storage(s["storage"], sweep_dir),
            study_name=s["study_name"],
            sampler=s["sampler"],
            pruner=pruner,
            direction=s["direction"],
            load_if_exists=True,
        )
        if study.direction.name.lower() != s["direction"]:
            stop_sweep(
                f"hydra.sweeper.direction={s['direction']}: study {s['study_name']!r} was created "
                f"to {study.direction.name.lower()}; choose another hydra.sweeper.study_name"
            )
        wanted = {name: distribution_to_json(d) for name, d in space.items()}
        recorded = study.user_attrs.get("search_space", wanted)
        if recorded == wanted:
            study.set_user_attr("search_space", wanted)
            return study
        name = min(k for k in recorded.keys() | wanted.keys() if recorded.get(k) != wanted.get(k))
        stop_sweep(
            f"hydra.sweeper.params.{name}: study {s['study_name']!r} searches another space "
            f"({recorded.get(name)} there, {wanted.get(name)} here); choose another "
            "hydra.sweeper.study_name"
        )
        return study

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        params = [f"{k}={v}" for k, v in self.settings["params"].items()] + list(arguments)
        overrides = OverridesParser.create().parse_overrides(params)
        space = {o.get_key_element(): distribution(o) for o in overrides if o.is_sweep_override()}
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
        study = self._study(space, sweep_dir)
        for old in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if old.user_attrs.get("job_dir", "").startswith(f"{sweep_dir.resolve()}/"):
                log.info("trial %d was interrupted: failed, run again in its job", old.number)
                optuna.Trial(study, old._trial_id).set_user_attr("interrupted", True)
                study.tell(old.number, state=TrialState.FAIL)
                study.enqueue_trial(old.params, {"job_dir": old.user_attrs["job_dir"]})
        n_trials, batch = self.settings["n_trials"], self.settings["n_jobs"]
        self.exhausted = False
        while (remaining := n_trials - _counted(study)) > 0 and not self.exhausted:
            trials = [study.ask(space) for _ in range(min(batch, remaining))]
            jobs = []
            for trial in trials:  # a new trial's job is named by its number
                job_dir = trial.user_attrs.get(
                    "job_dir", str(sweep_dir.resolve() / str(trial.number))
                )
                trial.set_user_attr("job_dir", job_dir)
                params = (f"{k}={v}" for k, v in trial.params.items())
                jobs.append([*fixed, *params, f"hydra.sweep.subdir={Path(job_dir).name}"])
            returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns, strict=True):
                self._tell(study, trial, ret, Path(trial.user_attrs["job_dir"]))
            self._check_failures(study)
        _write_results(study, sweep_dir)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, job_dir: Path) -> None:
        value, state = None, None  # a value alone: complete, or failed when it is NaN
        if read_pruned(job_dir) is not None:
            state = TrialState.PRUNED
        else:
            try:
                value = float(ret.return_value)
            except Exception as exc:  # noqa: BLE001 - the trial failed: its reason is logged
                log.warning("Failed experiment: %s", exc)
                state = TrialState.FAIL
        try:
            study.tell(trial, value, state=state)
        except RuntimeError as exc:
            # GridSampler and BruteForceSampler stop the study after their last combination, which
            # Optuna allows only inside study.optimize (optuna#5141); the trial is recorded
            if "Study.stop" not in str(exc):
                raise
            log.info("the sampler has tried every combination of the search space")
            self.exhausted = True

    def _check_failures(self, study: optuna.Study) -> None:
        trials = [t for t in study.trials if t.state.is_finished()]
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if failed > self.settings["max_failure_rate"] * len(trials):
            stop_sweep(
                f"{failed} of {len(trials)} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.settings['max_failure_rate']}"
            )


def _counted(study: optuna.Study) -> int:
    """Trials that count towards n_trials: all but the queued and the interrupted ones."""
    return sum(
        t.state != TrialState.WAITING and not t.user_attrs.get("interrupted")
        for t in study.get_trials(deepcopy=False)
    )


def _write_results(study: optuna.Study, sweep_dir: Path) -> None:
    """optimization_results.yaml: the study's trials by state and its best trial (over every
    process sharing it)."""
    states = Counter(t.state.name.lower() for t in study.trials)
    results: dict[str, Any] = {"name": study.study_name, "trials": dict(states)}
    if states["complete"]:
        best = study.best_trial
        results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    log.info(
        "Best parameters: %s (value %s)", results.get("best_params"), results.get("best_value")
    )
