"""brainseg's launchers resume a sweep: re-running its command with `hydra.sweep.dir=<the sweep>`
reuses the jobs whose record is complete (metrics.json with a reported epoch) and whose config is
the recorded one, runs the others (an interrupted job continues from its last.ckpt, train.py's
auto_resume) and refuses a job whose config differs, naming the setting. Here the local ones
(conf/hydra/launcher/): `brainseg_basic`, Hydra's basic launcher (one job after another in this
process), and `local`, a pool of processes (one job per GPU); slurm.py: SLURM.
"""

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
from typing import Any

import cloudpickle
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from brainseg.errors import ConfigError, DataError
from brainseg.run_lock import claim_run_directory, is_first_rank, release_run_directory
from brainseg.runfiles import read_metrics

log = logging.getLogger("brainseg")
Job = tuple[int, Sequence[str], DictConfig]  # number, overrides, config


def stop_sweep(message: str) -> None:
    """Stop the sweep with one `error: ...` line and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a plain config tree."""
    if not isinstance(node, dict):
        return {prefix: node}
    items = [_flat(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items()]
    return {k: v for item in items for k, v in item.items()}


def reused_return(job_config: DictConfig) -> JobReturn | None:
    """The finished job's JobReturn (its headline, as train.py returns it) when its
    directory holds a complete record; None when it must run. A job recorded with another config
    stops the sweep with one line naming the first setting that differs."""
    job_dir = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
    recorded = job_dir / ".hydra" / "config.yaml"
    if not recorded.is_file():
        return None
    task = OmegaConf.masked_copy(job_config, [k for k in job_config if k != "hydra"])
    old = _flat(OmegaConf.to_container(OmegaConf.load(recorded)))
    new = _flat(OmegaConf.to_container(task))
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if changed:
        key = changed[0]
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


class Resuming:
    """The launch every brainseg launcher shares: the jobs a resumed sweep finished are reused
    (`reused_return`), the others are handed to the launcher's `run`."""

    config: DictConfig
    hydra_context: Any

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        returns: dict[int, JobReturn] = {}
        pending: list[Job] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
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
        raise NotImplementedError


class ResumingLauncher(Resuming, BasicLauncher):
    """Hydra's basic launcher, reusing the jobs a resumed sweep already finished."""

    def run(self, jobs: list[Job]) -> dict[int, JobReturn]:
        """The jobs one after another in this process."""
        return {
            idx: holding_its_directory(
                config, partial(lambda o, i: BasicLauncher.launch(self, [o], i)[0], overrides, idx)
            )
            for idx, overrides, config in jobs
        }


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
        return JobReturn(
            overrides=list(config.hydra.overrides.task), status=JobStatus.FAILED, _return_value=exc
        )
    try:
        return run()
    finally:
        if claimed:
            release_run_directory(job_dir)


def _job(context: Any, task: Any, config: DictConfig, singletons: Any) -> JobReturn:
    """One sweep job inside its own process."""
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


# The job process: runs the pickled call, pickles its JobReturn.
_CHILD = (
    "import sys, cloudpickle\n"
    "job = cloudpickle.load(open(sys.argv[1], 'rb'))\n"
    "cloudpickle.dump(job(), open(sys.argv[2], 'wb'))\n"
)


class PoolLauncher(ResumingLauncher):
    """Each job in a process of its own, as many at once as the pool has slots."""

    def __init__(self, gpus: Sequence[int] | None, gpus_per_job: int, n_jobs: int) -> None:
        super().__init__()
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
        call, result = tmp / f"{idx}.call", tmp / f"{idx}.return"
        call.write_bytes(
            cloudpickle.dumps(
                partial(_job, self.hydra_context, self.task_function, config, Singleton.get_state())
            )
        )
        slot = free.get()
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {})}
        log.info("job %d (%s) started on %s", idx, " ".join(overrides), slot or "the CPU")
        try:
            subprocess.run([sys.executable, "-c", _CHILD, call, result], env=env, check=False)
        finally:
            free.put(slot)
        if not result.is_file():
            return JobReturn(
                overrides=list(overrides),
                status=JobStatus.FAILED,
                _return_value=RuntimeError(f"job {idx}: its process died"),
            )
        return cloudpickle.loads(result.read_bytes())
