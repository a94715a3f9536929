"""`python -m brainseg.postprocessing decide <run or sweep dir>`: choose the post-processing again
from the validation predictions a run (or every job of a sweep) saved; no model, no data needed.
Writes `<dir>/postprocessing.json`, and for a run also the provenance of its checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from brainseg.cli import exit_status
from brainseg.errors import ConfigError
from brainseg.postprocessing.decision import describe
from brainseg.postprocessing.records import DECISION_FILE, decide_folder


def _candidates(text: str | None) -> list | None:
    if text is None:
        return None
    try:
        candidates = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--candidates: not YAML/JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(candidates, list) or not all(isinstance(c, list) for c in candidates):
        raise ConfigError(
            "--candidates must be a list of step lists, e.g. '[[], [largest_component]]'"
        )
    return candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainseg.postprocessing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    decide = commands.add_parser("decide", help="choose the steps from the saved predictions")
    decide.add_argument("folder", type=Path, help="a train.py run directory or a sweep directory")
    decide.add_argument(
        "--candidates",
        help="step lists to choose among, simplest first, as YAML/JSON "
        "(default: those the run or sweep was decided among)",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        decision = decide_folder(args.folder, _candidates(args.candidates))
        print(f"{describe(decision)}; recorded in {args.folder / DECISION_FILE}")

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
