"""The report of scripts/gpu_check.sh (`versions <check dir>` before its steps, `summary <check
dir> <json path>` at the end): the versions, and training samples/s with channels_last off and on
(bench/train_speed.py) with the setting the figures choose for this GPU; also written as JSON."""

from __future__ import annotations

import json
import platform
import statistics
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTIONS = ("torch", "lightning", "torchmetrics", "segmentation-models-pytorch", "timm")
GAIN = 1.05  # the median on / off ratio at the largest size above which channels_last pays


def versions(check_dir: Path) -> None:
    """Print and keep the versions this Python imports (the machine's own or the carried ones)."""
    import torch

    found = {"python": platform.python_version(), "cuda": torch.version.cuda or "none"}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    (check_dir / "versions.json").write_text(json.dumps(found, indent=2) + "\n")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))


def summary(check_dir: Path, json_path: Path) -> bool:
    """Print the table and the setting it chooses, write both as JSON; False without figures."""
    from bench.train_speed import table

    path = check_dir / "train_speed.json"
    if not path.is_file():
        print(f"gpu-check: no training-speed figures ({path} is missing)", file=sys.stderr)
        return False
    speed = json.loads(path.read_text())
    largest = speed["rows"][-1]
    ratio = statistics.median(on / off for off, on in zip(largest["off"], largest["on"]))
    choice = "true" if ratio > GAIN else "false"
    versions = json.loads((check_dir / "versions.json").read_text())
    result = {"versions": versions, **speed, "channels_last": choice}
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n== gpu-check: {speed['device']}, {speed['precision']}; also in {json_path}")
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + "\n\n" + table(speed))
    print(
        f"\nchannels_last={choice} on this device: median on / off {ratio:.2f} at "
        f"{largest['size']} px ({'above' if choice == 'true' else 'not above'} {GAIN})"
    )
    return True


if __name__ == "__main__":
    command, check_dir = sys.argv[1], Path(sys.argv[2])
    if command == "versions":
        versions(check_dir)
    elif not summary(check_dir, Path(sys.argv[3])):
        sys.exit(1)
