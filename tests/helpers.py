"""Helpers for the tests: the real data's location, CLI runner, file snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
REAL_LGG = SHARED_DATA / "lgg"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime, to prove nothing was written there."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 1800
) -> subprocess.CompletedProcess:
    """Run one of the project's entry points as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tiny_train_overrides(root: Path, run_dir: Path, cache: Path) -> list[str]:
    """A few CPU seconds of training on the tiny synthetic data
    (the conf/debug/tiny.yaml preset)."""
    return [
        "debug=tiny",
        f"data.root={root}",
        f"data.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
    ]


requires_real_data = pytest.mark.skipif(
    not REAL_LGG.is_dir(), reason=f"real LGG data not found at {REAL_LGG} (see DEVELOPERS.md)"
)


def compose(overrides: list[str], hydra_node: bool = True, config_name: str = "train"):
    """A config as train.py / predict.py would compose it (without a Hydra run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        return hydra_compose(
            config_name=config_name, overrides=overrides, return_hydra_config=hydra_node
        )


def compose_run(root: Path, run_dir: Path, cache: Path, *overrides: str):
    """A tiny-training config runnable in-process by brainseg.training.pipeline.train."""
    base = [o for o in tiny_train_overrides(root, run_dir, cache) if not o.startswith("hydra.")]
    paths = [f"paths.root_dir={PROJECT}", f"paths.output_dir={run_dir}"]
    return compose([*base, *paths, *overrides], hydra_node=False)


def sweep_study(sweep: Path, storage: str | None = None, name: str = "brainseg"):
    """An Optuna search's study: in the sweep's journal file, or in the database `storage`."""
    import optuna

    from hydra_plugins.brainseg_sweeper._study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage, sweep))


def read_wandb_records(path: Path, deadline: float = 120.0) -> list:
    """The records of a finished W&B `.wandb` run file (offline runs), decoded with wandb's own
    protobufs. wandb's service process may still be writing when `run.finish()` returns, so this
    waits for the closing `exit` record; the deadline only bounds a failure.
    """
    import time

    give_up = time.monotonic() + deadline
    while True:
        records = _wandb_records(path.read_bytes(), path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < give_up, f"{path} has no exit record after {deadline:.0f} s"
        time.sleep(0.1)


def wandb_history_and_summary(run_file: Path) -> tuple[list[dict], dict]:
    """The history rows of a finished offline W&B run and the summary it ends with (each history
    row updates the summary, then the explicit summary updates do)."""
    import json

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    rows, summary = [], {}
    for record in read_wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({key(item): json.loads(item.value_json) for item in record.history.item})
            summary.update(rows[-1])
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return rows, summary


def _wandb_records(data: bytes, path: Path) -> list:
    """The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with
    a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    assert data[:4] == b":W&B"[: len(data)], f"{path} is not a W&B run file"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 or pos > len(data):  # padding, or a record still being written
            break
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def tiny_datamodule(root: Path, cache: Path, *overrides: str):
    """An LGGDataModule on tiny data (32 px, 2 validation patients), not yet set up."""
    from omegaconf import OmegaConf

    from brainseg.config import instantiate_setting

    cfg = compose(
        [
            f"data.root={root}",
            f"data.cache_dir={cache}",
            "data.split.n_val=2",
            "data.preprocess.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            *overrides,
        ]
    )
    OmegaConf.resolve(cfg.data)  # no Hydra run here: resolve ${seed} before instantiating
    return instantiate_setting("data", cfg.data)
