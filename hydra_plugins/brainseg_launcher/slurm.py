"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, plus what its plain wait lacks:
while the sweep waits, a report of each pending job's state and the scheduler's reason, and a stop
with one clear line when a reason means the job can never start."""

import logging
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from omegaconf import open_dict

from hydra_plugins.brainseg_launcher.local import Job, Resuming, holding_its_directory

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
    # Seconds between reports of the sweep's pending jobs while it waits.
    pending_report_s: int = 60


ConfigStore.instance().store(
    group="hydra/launcher", name="brainseg_slurm", node=SlurmConf(), provider="brainseg"
)


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`squeue` for the given jobs (array tasks one by one): job id -> (state, reason)."""
    if not job_ids:
        return {}
    result = subprocess.run(
        ["squeue", "--noheader", "--array", f"--jobs={','.join(job_ids)}", "--format=%i|%T|%r"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    rows = [line.split("|", 2) for line in result.stdout.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in rows}


class SlurmLauncher(Resuming, submitit_launcher.SlurmLauncher):
    """Submits like hydra-submitit-launcher the jobs a resumed sweep has not finished; waits for
    the results in a thread while the calling thread watches the queue every `pending_report_s`
    seconds."""

    def __init__(self, pending_report_s: int = 60, **params: Any) -> None:
        super().__init__(**params)
        self.pending_report_s = pending_report_s
        self.job_numbers: list[int] = []  # the submitted jobs' numbers, in submission order

    def _submitted(self) -> set[str]:
        """SLURM job ids of the sweep so far, from submitit's per-job folders (`<id>_<task>`)."""
        folder = Path(str(self.params["submitit_folder"])).parent
        return {p.name.split("_")[0] for p in folder.glob("[0-9]*") if p.is_dir()}

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict,
    ) -> JobReturn:
        """The job on its node (`job_num`: its place among the submitted jobs), holding its
        directory from before Hydra writes there."""
        Singleton.set_state(singleton_state)
        job_num = self.job_numbers[job_num]
        config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(config):
            config.hydra.job.num = job_num
        call = super().__call__
        return holding_its_directory(
            config, lambda: call(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        )

    def run(self, jobs: list[Job]) -> dict[int, JobReturn]:
        self.job_numbers = [idx for idx, _, _ in jobs]
        before = self._submitted()
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["returns"] = submitit_launcher.SlurmLauncher.launch(
                    self, [overrides for _, overrides, _ in jobs], 0
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                outcome["error"] = exc

        worker = threading.Thread(target=wait, name="slurm-results", daemon=True)
        worker.start()
        worker.join(self.pending_report_s)
        while worker.is_alive():
            self._watch(sorted(self._submitted() - before))
            worker.join(self.pending_report_s)
        if "error" in outcome:
            raise outcome["error"]
        return dict(zip(self.job_numbers, outcome["returns"], strict=True))

    def _watch(self, job_ids: list[str]) -> None:
        """Log the pending jobs with their reasons;
        cancel the sweep's jobs and exit when one can never start."""
        pending = {
            job: reason
            for job, (state, reason) in queue_states(job_ids).items()
            if state == "PENDING"
        }
        if not pending:
            return
        log.info(
            "waiting for SLURM: %s",
            ", ".join(f"job {job} PENDING ({reason})" for job, reason in sorted(pending.items())),
        )
        stuck = {
            job: reason for job, reason in pending.items() if reason.split(",")[0] in NEVER_STARTS
        }
        if stuck:
            job, reason = min(stuck.items())
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)
            print(
                f"error: SLURM job {job} can never start: {reason} "
                f"({NEVER_STARTS[reason.split(',')[0]]}); "
                "cancelled "
                + (
                    f"the sweep's SLURM job {job_ids[0]}"
                    if len(job_ids) == 1
                    else f"the sweep's {len(job_ids)} SLURM jobs ({', '.join(job_ids)})"
                ),
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
