"""`python -m brainseg.postprocessing decide <run or sweep dir>`: decide the post-processing from
saved validation predictions alone (no model, no data): again for a run, or once for a k-fold sweep
of one configuration, its folds pooled out of fold.

Writes `<dir>/postprocessing.json` (an existing one only with `--overwrite`) and, for a run, the
provenance of its checkpoints, holding each run's lock as train.py does. A sweep whose jobs differ
in anything but `data.split.fold` is refused, naming the differing overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from brainseg.cli import exit_status
from brainseg.errors import ConfigError, DataError
from brainseg.postprocessing import parse_yaml
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import DECISION_FILE, VALIDATION_DIR, decide_runs
from brainseg.reporting.sweep import collect_jobs, configurations
from brainseg.run_lock import claim_run_directory, release_run_directory


def _folds(sweep: Path) -> list[Path]:
    """The jobs of a sweep that saved validation predictions, all of one configuration."""
    jobs = [j for j in collect_jobs(sweep) if (sweep / j["job"] / VALIDATION_DIR).is_dir()]
    found = sorted(set(configurations(jobs).values()))
    if len(found) > 1:
        raise ConfigError(
            f"{sweep}: its jobs are {len(found)} configurations ({'; '.join(found)}), not the "
            "folds of one, and a decision pools the folds of one configuration only; decide each "
            f"run: python -m brainseg.postprocessing decide {sweep}/<job>"
        )
    return [sweep / j["job"] for j in jobs]


def decide_folder(folder: Path, candidates: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Decide for a run directory or a k-fold sweep directory (see the module docstring)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run or sweep directory")
    if (folder / DECISION_FILE).is_file() and not overwrite:
        raise ConfigError(
            f"{folder / DECISION_FILE} holds a decision already; pass --overwrite to replace it"
        )
    runs = [folder] if (folder / VALIDATION_DIR).is_dir() else _folds(folder)
    claimed = [run for run in runs if claim_run_directory(run)]  # no live train.py rewrites them
    try:
        return decide_runs(folder, runs, candidates)
    finally:
        for run in claimed:
            release_run_directory(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainseg.postprocessing", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    decide = commands.add_parser("decide", help="choose the steps from the saved predictions")
    decide.add_argument("folder", type=Path, help="a train.py run directory or a k-fold sweep")
    decide.add_argument(
        "--candidates",
        help="step lists to choose among, simplest first, as YAML/JSON "
        "(default: those the run or the folds were decided among)",
    )
    decide.add_argument(
        "--overwrite", action="store_true", help=f"replace the folder's {DECISION_FILE}"
    )
    args = parser.parse_args(argv)

    def run() -> None:
        candidates = (
            None if args.candidates is None else parse_yaml(args.candidates, "--candidates")
        )
        decision = decide_folder(args.folder, candidates, args.overwrite)
        print(f"{describe(decision)}; recorded in {args.folder / DECISION_FILE}")

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
