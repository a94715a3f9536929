"""The Optuna search: ask the study for trials, launch them as jobs, tell it their results. A
trial's job directory is its `job_dir` user attribute, named by its trial number."""

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from brainseg.runfiles import read_pruned
from hydra_plugins.brainseg_launcher.local import stop_sweep

log = logging.getLogger("brainseg")


def open_storage(url: str | None, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage: the sweep's journal file, or a database (one line if unreachable)."""
    if url is None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, one line names it
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            shown = "(not a database URL)"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        stop_sweep(f"hydra.sweeper.storage={shown}: cannot open the study's database: {reason}")


def distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep: choice or range (each value a choice), or
    interval (`log` tag: sampled on a log scale)."""
    if override.is_choice_sweep() or override.is_range_sweep():
        return optuna.distributions.CategoricalDistribution(
            list(override.sweep_iterator(Transformer.encode))
        )
    value = override.value()
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
    return optuna.distributions.FloatDistribution(
        float(value.start), float(value.end), log=log_scale
    )


def load_study(
    s: dict[str, Any], space: dict[str, BaseDistribution], sweep_dir: Path
) -> optuna.Study:
    """The study, created or loaded; one line if it was created with another direction or
    search space, or the pruner is not an Optuna pruner."""
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
    wanted = {name: optuna.distributions.distribution_to_json(d) for name, d in space.items()}
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


def search(s: dict[str, Any], config: DictConfig, launcher: Launcher, arguments: list[str]) -> None:
    """Runs trials until the study holds `n_trials` (over every start and process sharing it);
    `s`: the sweeper's settings."""
    sweep_dir = Path(str(config.hydra.sweep.dir))  # created by brainseg's SweepGuard
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    params = [f"{k}={v}" for k, v in s["params"].items()] + list(arguments)
    overrides = OverridesParser.create().parse_overrides(params)
    space = {o.get_key_element(): distribution(o) for o in overrides if o.is_sweep_override()}
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    study = load_study(s, space, sweep_dir)
    resumed = [  # trials a kill left running: run again in their jobs (from their last.ckpt)
        optuna.Trial(study, t._trial_id)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("job_dir", "").startswith(f"{sweep_dir.resolve()}/")
    ]
    if resumed:
        log.info("trials %s were interrupted: run again in their jobs", [t.number for t in resumed])
    exhausted = False  # a grid sampler has tried every combination
    while not exhausted and (resumed or (remaining := s["n_trials"] - _counted(study)) > 0):
        trials = resumed or [study.ask(space) for _ in range(min(s["n_jobs"], remaining))]
        resumed = []
        jobs = []
        for trial in trials:  # a new trial's job is named by its number
            job_dir = trial.user_attrs.get("job_dir", str(sweep_dir.resolve() / str(trial.number)))
            trial.set_user_attr("job_dir", job_dir)
            params = (f"{k}={v}" for k, v in trial.params.items())
            jobs.append([*fixed, *params, f"hydra.sweep.subdir={Path(job_dir).name}"])
        for trial, ret in zip(trials, launcher.launch(jobs, trials[0].number), strict=True):
            exhausted = _tell(study, trial, ret) or exhausted
        done = [t for t in study.trials if t.state.is_finished()]
        failed = sum(t.state == TrialState.FAIL for t in done)
        if failed > s["max_failure_rate"] * len(done):
            stop_sweep(
                f"{failed} of {len(done)} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={s['max_failure_rate']}"
            )
    if any(t.state == TrialState.COMPLETE for t in study.trials):
        best = study.best_trial
        log.info("Best trial %d: %s (value %s)", best.number, best.params, best.value)


def _tell(study: optuna.Study, trial: optuna.Trial, ret: Any) -> bool:
    """The trial's value; or pruned (its job's pruned.json); or failed, its reason logged. True
    when the sampler says it has tried every combination of the search space."""
    value, state = None, None  # a value alone: complete, or failed where it is NaN
    if read_pruned(Path(trial.user_attrs["job_dir"])) is not None:
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
        return True
    return False


def _counted(study: optuna.Study) -> int:
    """Trials that count towards n_trials: all but the queued ones."""
    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
