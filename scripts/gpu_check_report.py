"""The figures of scripts/gpu_check.sh: the versions it runs with (before it starts) and its final
table (at the end), the table also written as JSON for the benchmarks document.

    python scripts/gpu_check_report.py versions <check dir>
    python scripts/gpu_check_report.py summary <check dir> <json path>

Reads what the check's steps left in <check dir>: versions.json, train_speed.json,
device_augmentation.json, run/csv/metrics.csv, run/metrics.json and nvidia_smi.csv (absent
where the machine has no nvidia-smi).
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from brainseg.runfiles import read_metrics

# Distributions whose versions decide whether the check is comparable with another machine's.
DISTRIBUTIONS = (
    "torch",
    "lightning",
    "torchmetrics",
    "segmentation-models-pytorch",
    "timm",
    "numpy",
)


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


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _reference_epochs(run_dir: Path) -> list[dict]:
    """Per epoch: wall time, samples/s, data wait (TrainingSpeed) and validation Dice."""
    epochs: dict[int, dict] = {}
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            # metrics.csv counts from 0 (Lightning's counter); people read epochs from 1
            number = int(row["epoch"]) + 1
            epoch = epochs.setdefault(number, {"epoch": number})
            for column, key in (
                ("speed/epoch_s", "epoch_s"),
                ("speed/samples_per_s", "samples_per_s"),
                ("speed/data_wait", "data_wait"),
                ("val/dsc_volume", "val_dsc_volume"),
            ):
                if row.get(column):
                    epoch[key] = float(row[column])
    return [epochs[k] for k in sorted(epochs)]


def _gpu_utilisation(path: Path) -> dict:
    """Mean utilisation over the busy 0.5 s samples of nvidia-smi and the most memory used."""
    if not path.is_file():
        return {"note": "no nvidia-smi on this machine"}
    samples = []
    for line in path.read_text().splitlines():
        try:
            samples.append([float(v) for v in line.split(",")])
        except ValueError:
            continue
    busy = [s for s in samples if s[0] > 0]
    if not busy:
        return {"note": f"no busy sample among {len(samples)}"}
    return {
        "mean_percent": sum(s[0] for s in busy) / len(busy),
        "busy_samples": len(busy),
        "memory_used_mib": max(s[1] for s in samples),
    }


def summary(check_dir: Path, json_path: Path) -> bool:
    """Print the final table and write it as JSON; False if a figure is missing."""
    speed = _read_json(check_dir / "train_speed.json")
    augmentation = _read_json(check_dir / "device_augmentation.json")
    metrics = read_metrics(check_dir / "run")
    best = metrics.best if metrics else None
    result = {
        "versions": _read_json(check_dir / "versions.json"),
        "device": speed.get("device"),
        "train_speed": speed,
        "augmentation": augmentation,
        "reference_run": {
            "epochs": _reference_epochs(check_dir / "run"),
            "best_val_dsc_volume": best.dsc_volume_mean if best else None,
            "best_epoch": best.epoch if best else None,
        },
        "gpu_utilisation": _gpu_utilisation(check_dir / "nvidia_smi.csv"),
    }
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n== gpu-check summary ({result['device']}; also in {json_path})")
    print(f"training speed, {speed.get('size')} px:")
    print(
        f"  {'path':<12} {'precision':<10} {'ch_last':<7} {'compile':<7} {'batch':>5} "
        f"{'samples/s':>10} {'data wait':>9} {'peak MB':>8}"
    )
    for row in speed.get("rows", []):
        path = f"workers ({row['workers']})" if row["loader"] == "workers" else "device"
        head = (
            f"  {path:<12} {row['precision']:<10} {'on' if row['channels_last'] else 'off':<7} "
            f"{'on' if row['compile'] else 'off':<7} {row['batch_size']:>5}"
        )
        if "error" in row:
            print(f"{head} failed: {row['error']}")
        else:
            print(
                f"{head} {row['samples_per_s']:>10.1f} {100 * row['data_wait']:>8.1f}% "
                f"{row['peak_mb']:>8.0f}"
            )
    print(f"augmentation, {augmentation.get('size')} px (ms per batch):")
    for row in augmentation.get("rows", []):
        print(f"  batch {row['batch_size']:>4}  {row['method']:<30} {row['ms_per_batch']:>8.1f}")
    run = result["reference_run"]
    print("experiment=reference run:")
    for epoch in run["epochs"]:
        print(
            f"  epoch {epoch['epoch']}: {epoch.get('epoch_s', float('nan')):.1f} s, "
            f"{epoch.get('samples_per_s', float('nan')):.1f} samples/s, data wait "
            f"{100 * epoch.get('data_wait', float('nan')):.1f}%, val Dice "
            f"{epoch.get('val_dsc_volume', float('nan')):.4f}"
        )
    if run["best_val_dsc_volume"] is not None:
        print(
            f"  best val/dsc_volume mean {run['best_val_dsc_volume']:.4f} "
            f"(epoch {run['best_epoch']})"
        )
    gpu = result["gpu_utilisation"]
    if "note" in gpu:
        print(f"GPU utilisation during the run: {gpu['note']}")
    else:
        print(
            f"GPU utilisation during the run: mean {gpu['mean_percent']:.0f}% over "
            f"{gpu['busy_samples']} busy samples, memory used up to "
            f"{gpu['memory_used_mib']:.0f} MiB"
        )
    rows = speed.get("rows", [])
    return bool(rows and augmentation.get("rows") and run["epochs"]) and not any(
        "error" in row for row in rows
    )


def main() -> int:
    command, check_dir = sys.argv[1], Path(sys.argv[2])
    if command == "versions":
        versions(check_dir)
        return 0
    if summary(check_dir, Path(sys.argv[3])):
        return 0
    print("gpu-check: figures are missing from the table (a step or a row failed)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
