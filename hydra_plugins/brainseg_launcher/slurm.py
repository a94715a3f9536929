"""`hydra/launcher=slurm` (docs/gpu.md#slurm): hydra-submitit-launcher's, resuming a sweep, and
reporting its pending jobs while it waits; a job that can never start stops it in one line."""

import logging
import subprocess
import threading
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from omegaconf import open_dict

from hydra_plugins.brainseg_launcher import local

log = logging.getLogger("brainseg")

# squeue reasons a pending job never recovers from without a changed request or an administrator
# (https://slurm.schedmd.com/job_reason_codes.html). `Resources`, `Priority`, `ReqNodeNotAvail`
# (nodes may come back), `BeginTime`, `Dependency` and the *Grp* limits wait their turn.
NEVER_STARTS = {
    "AccountNotAllowed": "the account may not use this partition",
    "BadConstraints": "no node has the requested features/constraints",
    "DependencyNeverSatisfied": "a job it depends on failed",
    "InvalidAccount": "the account is invalid",
    "InvalidQOS": "the QOS is invalid",
    "PartitionConfig": (
        "the request does not fit the partition: compare hydra.launcher.cpus_per_task, "
        "mem_gb and gpus_per_node with `sinfo -o '%P %c %m %G'`"
    ),
    "PartitionNodeLimit": (
        "hydra.launcher.nodes is outside the partition's limits (`sinfo -o '%P %D'`)"
    ),
    "PartitionTimeLimit": (
        "hydra.launcher.timeout_min exceeds the partition's time limit (`sinfo -o '%P %l'`)"
    ),
    "QOSNotAllowed": "the QOS may not use this partition",
}


@dataclass
class SlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.brainseg_launcher.slurm.SlurmLauncher"
    pending_report_s: int = 60


ConfigStore.instance().store(
    group="hydra/launcher", name="brainseg_slurm", node=SlurmConf(), provider="brainseg"
)


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`squeue` for the given jobs (array tasks one by one): job id -> (state, reason)."""
    if not job_ids:
        return {}
    jobs = ",".join(job_ids)
    command = ["squeue", "--noheader", "--array", f"--jobs={jobs}", "--format=%i|%T|%r"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    rows = [line.split("|", 2) for line in result.stdout.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in rows}


class SlurmLauncher(local.ResumingLauncher, submitit_launcher.SlurmLauncher):
    """Waits for the jobs' results in a thread while this one watches the queue."""

    def __init__(self, pending_report_s: int = 60, **params: Any) -> None:
        super().__init__(**params)
        self.pending_report_s = pending_report_s
        self.job_numbers: list[int] = []  # the submitted jobs' numbers, in submission order

    def _submitted(self) -> set[str]:
        """SLURM job ids of the sweep so far, from submitit's per-job folders (`<id>_<task>`)."""
        folder = Path(str(self.params["submitit_folder"])).parent
        return {p.name.split("_")[0] for p in folder.glob("[0-9]*") if p.is_dir()}

    def __call__(
        self, overrides: list[str], dir_key: str, job_num: int, job_id: str, state: dict
    ) -> JobReturn:
        """The job on its node (`job_num`: its place among the submitted jobs), holding its
        directory from before Hydra writes there."""
        Singleton.set_state(state)
        job_num = self.job_numbers[job_num]
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.num = job_num
        call = super().__call__
        return local.holding_its_directory(
            config, lambda: call(overrides, dir_key, job_num, job_id, state)
        )

    def run(self, jobs: list[local.Job]) -> dict[int, JobReturn]:
        self.job_numbers = [idx for idx, _, _ in jobs]
        before = self._submitted()
        results: Future = Future()

        def wait() -> None:  # a daemon thread: a stop in one line does not wait for it
            try:
                submitted = [overrides for _, overrides, _ in jobs]
                results.set_result(submitit_launcher.SlurmLauncher.launch(self, submitted, 0))
            except BaseException as exc:  # noqa: BLE001 - raised by results.result()
                results.set_exception(exc)

        threading.Thread(target=wait, name="slurm-results", daemon=True).start()
        while futures.wait([results], self.pending_report_s).not_done:
            self._watch(sorted(self._submitted() - before))
        return dict(zip(self.job_numbers, results.result(), strict=True))

    def _watch(self, job_ids: list[str]) -> None:
        """Log the pending jobs and their reasons; stop the sweep when one can never start."""
        states = sorted(queue_states(job_ids).items())
        pending = [(job, reason) for job, (state, reason) in states if state == "PENDING"]
        if pending:
            shown = ", ".join(f"job {job} PENDING ({reason})" for job, reason in pending)
            log.info("waiting for SLURM: %s", shown)
        stuck = [(job, reason) for job, reason in pending if reason.split(",")[0] in NEVER_STARTS]
        if not stuck:
            return
        job, reason = stuck[0]
        why = NEVER_STARTS[reason.split(",")[0]]
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)
        many = f"{len(job_ids)} SLURM jobs ({', '.join(job_ids)})"
        cancelled = f"SLURM job {job_ids[0]}" if len(job_ids) == 1 else many
        local.stop_sweep(
            f"SLURM job {job} can never start: {reason} ({why}); cancelled the sweep's {cancelled}",
            status=1,
        )
