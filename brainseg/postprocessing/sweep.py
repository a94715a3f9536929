"""Hydra callback: at the end of a multirun (e.g. the k folds of a k-fold sweep), decide the
post-processing once, out of fold, on the pooled validation predictions of all its jobs
(`<sweep>/postprocessing.json`, which `predict.py sweep_dir=` applies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from brainseg.errors import BrainsegError
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import DECISION_FILE, decide_folder, sweep_jobs


class DecideAfterSweep(Callback):
    """Runs when the jobs have decided for themselves (their runs hold postprocessing.json)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not any(
            (job / DECISION_FILE).is_file() for job in sweep_jobs(sweep_dir)
        ):
            return
        try:
            decision = decide_folder(sweep_dir)
        except BrainsegError as exc:  # the jobs' own results stand; say why there is no decision
            print(f"no post-processing decision for the sweep: {exc}", flush=True)
            return
        print(f"sweep {describe(decision)}: {sweep_dir / DECISION_FILE}", flush=True)
