"""`python -m brainseg.evaluate PRED_DIR TRUTH_DIR --output OUT_DIR [--split RUN_DIR]`: score
predicted masks from any program against truth masks, both in the kaggle_3m layout (see
brainseg.reporting.folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brainseg.cli import exit_status
from brainseg.metrics import NSD_TOLERANCE
from brainseg.postprocessing import parse_yaml
from brainseg.reporting.folder import evaluate_folder
from brainseg.reporting.scores import headline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainseg.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("pred_dir", help="predicted masks: <patient>/<patient>_<n>_mask.tif")
    parser.add_argument(
        "truth_dir", help="truth masks (a kaggle_3m data root): the same names and shapes"
    )
    written = "dsc.csv, dsc_summary.json, dsc.png"
    parser.add_argument("--output", required=True, help=f"a new or empty folder for {written}")
    parser.add_argument(
        "--postprocessing",
        default="[]",
        help="brainseg.postprocessing steps applied to the predictions before scoring, a step list "
        "as YAML/JSON, e.g. '[{name: remove_small_components, min_voxels: 10}]' (default: none)",
    )
    parser.add_argument(
        "--nsd-tolerance", type=float, default=NSD_TOLERANCE, help="pixels (default %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty output folder")
    parser.add_argument(
        "--split",
        help="which patients are held out: a run directory, its split.json, or a text file listing "
        "held-out patients one per line (default: every patient is unseen, held out)",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        folders = (args.pred_dir, args.truth_dir, args.output)
        steps = parse_yaml(args.postprocessing, "--postprocessing")
        summary = evaluate_folder(*folders, steps, args.nsd_tolerance, args.overwrite, args.split)
        print(headline(summary["scores"], summary["postprocessing"], Path(args.output)))

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
