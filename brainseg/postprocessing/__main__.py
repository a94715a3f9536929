"""`python -m brainseg.postprocessing decide <run dir>`: decide a run's post-processing again from
its saved validation predictions alone (no model, no data), e.g. among other candidates.

Writes `<run>/postprocessing.json` and the provenance of the run's checkpoints, holding the run's
lock as train.py does. A k-fold sweep's folds are pooled where used (`records.pooled_decision`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brainseg.cli import exit_status
from brainseg.errors import ConfigError, DataError
from brainseg.postprocessing import parse_yaml
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import DECISION_FILE, VALIDATION_DIR, decide_run
from brainseg.run_lock import claim_run_directory, release_run_directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainseg.postprocessing", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    decide = commands.add_parser("decide", help="choose the steps from the saved predictions")
    decide.add_argument("folder", type=Path, help="a train.py run directory")
    decide.add_argument(
        "--candidates",
        help="step lists to choose among, simplest first, as YAML/JSON "
        "(default: those the run was decided among)",
    )
    decide.add_argument("--overwrite", action="store_true", help=f"replace {DECISION_FILE}")
    args = parser.parse_args(argv)

    def run() -> None:
        folder, recorded = args.folder, args.folder / DECISION_FILE
        if not (folder / VALIDATION_DIR).is_dir():
            raise DataError(
                f"{folder}: not a run directory with saved validation predictions "
                f"({VALIDATION_DIR}/); a k-fold sweep's folds are pooled where they are used"
            )
        if recorded.is_file() and not args.overwrite:
            raise ConfigError(f"{recorded} holds a decision already; pass --overwrite")
        candidates = args.candidates and parse_yaml(args.candidates, "--candidates")
        claimed = claim_run_directory(folder)  # no live train.py rewrites it
        try:
            decision = decide_run(folder, candidates)
        finally:
            if claimed:
                release_run_directory(folder)
        print(f"{describe(decision)}; recorded in {recorded}")

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
