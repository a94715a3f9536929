"""CUDA checks (`make gpu-check` runs them on a machine with a GPU; skipped elsewhere): mixed
precision training steps, the device loader on the GPU, predict.py on the GPU, the metric on
CUDA tensors. BRAINSEG_TEST_DEVICE=cpu runs the same logic on the CPU (`make gpu-check-rehearsal`);
there 16-mixed falls back to bf16-mixed, as Lightning does on a CPU."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import PROJECT, compose, compose_run, run_cli
from omegaconf import OmegaConf

from brainseg.config import instantiate_setting
from brainseg.metrics import VolumeMetrics
from brainseg.postprocessing import largest_component

DEVICE = os.environ.get("BRAINSEG_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
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
        "data.loader=device",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert len(metrics.best.per_patient) == 2
    with open(tmp_path / "run" / "csv" / "metrics.csv") as fh:
        losses = [float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")]
    assert losses and all(
        math.isfinite(v) for v in losses
    )  # fp16 overflow or a broken scaler shows here


def test_device_loader_on_the_gpu_matches_the_cpu(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = compose(
        [
            f"data.root={synthetic_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.split.n_val=2",
            "data.preprocess.image_size=32",
            "data.batch_size=4",
            "data.loader=device",
            "data/augmentation=strong",  # every transform the device path builds, on CUDA
        ]
    )
    OmegaConf.resolve(cfg.data)
    dm = instantiate_setting("data", cfg.data)
    dm.setup("fit")
    cpu = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]  # no trainer: on the CPU
    dm.trainer = type(
        "T",
        (),
        {
            "strategy": type("S", (), {"root_device": torch.device(DEVICE, 0)})(),
            "global_rank": 0,
            "world_size": 1,
        },
    )()
    cuda = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
    for a, b in zip(cpu, cuda, strict=True):
        assert b["image"].device.type == DEVICE and all(torch.equal(a[k], b[k].cpu()) for k in a)
    train = next(iter(dm.train_dataloader()))
    assert train["image"].device.type == DEVICE
    assert set(train["mask"].unique().tolist()) <= {0.0, 1.0}


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
