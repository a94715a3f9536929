"""CUDA checks (`make gpu-check` runs them on a machine with a GPU; skipped elsewhere): mixed
precision training steps, predict.py on the GPU, the metric on CUDA tensors.
BRAINSEG_TEST_DEVICE=cpu runs the same logic on the CPU (`make gpu-check-rehearsal`), with
bf16-mixed only: Lightning turns 16-mixed into it on a CPU."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import PROJECT, compose_run, run_cli

from brainseg.metrics import VolumeMetrics
from brainseg.postprocessing.steps import largest_component

DEVICE = os.environ.get("BRAINSEG_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU"),
]


@pytest.mark.parametrize(
    "precision", ["16-mixed", "bf16-mixed"] if DEVICE == "cuda" else ["bf16-mixed"]
)
def test_mixed_precision_training_on_the_gpu(
    synthetic_root: Path, tmp_path: Path, precision: str
) -> None:
    from brainseg.training.pipeline import train

    cfg = compose_run(
        synthetic_root,
        tmp_path / "run",
        tmp_path / "cache",
        "trainer=gpu" if DEVICE == "cuda" else "trainer=cpu",
        f"trainer.precision={precision}",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert len(metrics.best.per_patient) == 2
    with open(tmp_path / "run" / "csv" / "metrics.csv") as fh:
        losses = [float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")]
    assert losses and all(
        math.isfinite(v) for v in losses
    )  # fp16 overflow or a broken scaler shows here


def test_predict_on_the_gpu(tiny_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "predict.py",
        f"input={synthetic_root}",
        f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]",
        f"output_dir={out}",
        f"device={DEVICE}",
        "progress=false",
        "figures.overlays=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json.loads((out / "dsc_summary.json").read_text())) > 0


def test_volume_dice_on_cuda_tensors_equals_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    probs, target = (
        torch.rand(12, 1, 16, 16, generator=g),
        (torch.rand(12, 1, 16, 16, generator=g) > 0.7).float(),
    )
    patient, slices = torch.arange(12) // 4, torch.arange(12) % 4
    scores = []
    for device in ("cpu", DEVICE):
        metric = VolumeMetrics(postprocess=largest_component).to(device)
        metric.update(probs.to(device), target.to(device), patient.to(device), slices.to(device))
        scores.append(metric.compute())
    assert scores[0] == scores[1] and len(scores[0]) == 3
