"""brainseg's launchers, which resume a sweep (docs/sweeps.md#resume-a-sweep): `brainseg_basic`
runs its jobs one after another here, `local` each in a process of its own, slurm.py on SLURM."""

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from queue import Queue
from typing import Any, NoReturn

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from brainseg.errors import ConfigError, DataError
from brainseg.run_lock import claim_run_directory, is_first_rank, release_run_directory
from brainseg.runfiles import read_metrics

log = logging.getLogger("brainseg")
Job = tuple[int, Sequence[str], DictConfig]  # number, overrides, config


def stop_sweep(message: str, status: int = 2) -> NoReturn:
    """Stop the sweep with one `error: ...` line and exit `status` (2: a mistake in the command)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a plain config tree."""
    if not isinstance(node, dict):
        return {prefix: node}
    items = [_flat(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items()]
    return {k: v for item in items for k, v in item.items()}


def failed_return(overrides: Sequence[str], error: BaseException) -> JobReturn:
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)


def reused_return(job_config: DictConfig) -> JobReturn | None:
    """The finished job's JobReturn (its headline, as train.py returns it) when its
    directory holds a complete record; None when it must run. A job recorded with another config
    stops the sweep with one line naming the first setting that differs."""
    job_dir = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
    recorded = job_dir / ".hydra" / "config.yaml"
    if not recorded.is_file():
        return None
    task = OmegaConf.masked_copy(job_config, [k for k in job_config if k != "hydra"])
    old, new = (_flat(OmegaConf.to_container(c)) for c in (OmegaConf.load(recorded), task))
    key = min((k for k in old.keys() | new.keys() if old.get(k) != new.get(k)), default=None)
    if key is not None:
        stop_sweep(
            f"{job_dir}: job {job_config.hydra.job.num} was run with {key}={old.get(key)!r}, "
            f"this command gives {key}={new.get(key)!r}; resume a sweep with its own command, "
            "or choose a new hydra.sweep.dir"
        )
    try:
        metrics = read_metrics(job_dir)
    except DataError:  # torn by a kill: the job runs again
        return None
    if metrics is None or not metrics.finished:
        return None
    log.info("job %s: finished before, reused (%s)", job_config.hydra.job.num, job_dir)
    return JobReturn(
        list(job_config.hydra.overrides.task),
        task,
        status=JobStatus.COMPLETED,
        working_dir=str(job_dir),
        _return_value=metrics.headline,
    )


class ResumingLauncher(Launcher):
    """Reuses the jobs a resumed sweep finished (`reused_return`) and hands the others to `run`:
    here one after another in this process, as Hydra's basic launcher runs them."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        returns: dict[int, JobReturn] = {}
        pending: list[Job] = []
        load = self.hydra_context.config_loader.load_sweep_config
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            config = load(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = idx
            reused = reused_return(config)
            if reused is None:
                pending.append((idx, overrides, config))
            else:
                returns[idx] = reused
        returns.update(self.run(pending) if pending else {})
        return [returns[idx] for idx in sorted(returns)]

    def run(self, jobs: list[Job]) -> dict[int, JobReturn]:
        """Job number -> its return, for the jobs that must run."""
        returns = {}
        for idx, overrides, config in jobs:
            log.info("job %d (%s) started", idx, " ".join(overrides))
            returns[idx] = _job(self.hydra_context, self.task_function, config)
            # the job's logging (its train.log) ends with it
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns


def holding_its_directory(config: DictConfig, run: Callable[[], JobReturn]) -> JobReturn:
    """Run a job holding its directory, claimed before Hydra writes its .hydra/ files there: a job
    directory a live process holds (an earlier start of the sweep, a train.py into it) is refused
    in one line and nothing is written into it."""
    if not is_first_rank():  # the other DDP ranks of a SLURM job run in rank 0's directory
        return run()
    job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    try:
        claimed = claim_run_directory(job_dir, "hydra.sweep.dir")
    except ConfigError as exc:
        log.error("job %s refused: %s", config.hydra.job.num, exc)
        return failed_return(config.hydra.overrides.task, exc)
    try:
        return run()
    finally:
        if claimed:
            release_run_directory(job_dir)


def _job(context: Any, task: Any, config: DictConfig, singletons: Any = None) -> JobReturn:
    """One sweep job; `singletons`: Hydra's state, for a job in a process of its own."""
    if singletons is not None:
        Singleton.set_state(singletons)
        setup_globals()
    return holding_its_directory(
        config,
        lambda: run_job(
            hydra_context=context,
            task_function=task,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        ),
    )


# The job process: runs the call pickled on its stdin, pickles its JobReturn into a file.
_CHILD = "import sys, cloudpickle as c; c.dump(c.load(sys.stdin.buffer)(), open(sys.argv[1], 'wb'))"


class PoolLauncher(ResumingLauncher):
    """Each job in a process of its own, as many at once as the pool has slots."""

    def __init__(self, gpus: Sequence[int] | None, gpus_per_job: int, n_jobs: int) -> None:
        if gpus is None:
            import torch

            gpus = range(torch.cuda.device_count())
        pool, k = [str(g) for g in gpus], gpus_per_job
        groups = [",".join(pool[i : i + k]) for i in range(0, len(pool) - k + 1, k)]
        self.slots: list[str | None] = list(groups) if pool else [None] * n_jobs

    def run(self, jobs: list[Job]) -> dict[int, JobReturn]:
        free: Queue[str | None] = Queue()
        for slot in self.slots:
            free.put(slot)
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(len(self.slots)) as pool:
            returns = pool.map(lambda job: self._process(job, free, Path(tmp)), jobs)
            return dict(zip((idx for idx, _, _ in jobs), returns, strict=True))

    def _process(self, job: Job, free: "Queue[str | None]", tmp: Path) -> JobReturn:
        idx, overrides, config = job
        result = tmp / f"{idx}.return"
        call = partial(_job, self.hydra_context, self.task_function, config, Singleton.get_state())
        slot = free.get()
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {})}
        log.info("job %d (%s) started on %s", idx, " ".join(overrides), slot or "the CPU")
        try:
            command = [sys.executable, "-c", _CHILD, result]
            subprocess.run(command, input=cloudpickle.dumps(call), env=env, check=False)
        finally:
            free.put(slot)
        if not result.is_file():
            return failed_return(overrides, RuntimeError(f"job {idx}: its process died"))
        return cloudpickle.loads(result.read_bytes())
