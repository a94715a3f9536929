"""Per-volume Dice under DDP (2 CPU processes, gloo) equals the single-process value."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from brainseg.metrics import VolumeMetrics
from brainseg.postprocessing.steps import largest_component

pytestmark = pytest.mark.slow


def _slices() -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """7 slices of 2 patients (odd: a 2-rank DistributedSampler pads with a repeated slice)."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for patient, count in ((0, 4), (1, 3)):
        for z in range(count):
            truth = torch.zeros(16, 16)
            truth[4:10, 3 + z : 9 + z] = 1
            rows.append(
                (
                    patient,
                    z,
                    (truth * 0.6 + 0.5 * torch.rand(16, 16, generator=gen)).clamp(0, 1),
                    truth,
                )
            )
    return rows


def _update(metric: VolumeMetrics, rows, indices) -> None:
    for i in indices:
        patient, z, prob, truth = rows[i]
        metric.update(
            prob[None, None], truth[None, None], torch.tensor([patient]), torch.tensor([z])
        )


def _rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = _slices()
    sampler = DistributedSampler(range(len(rows)), num_replicas=world, rank=rank, shuffle=False)
    metric = VolumeMetrics(postprocess=largest_component)
    _update(metric, rows, list(sampler))
    torch.save(metric.compute(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_volume_dice_is_exact_under_ddp(tmp_path: Path) -> None:
    rows = _slices()
    single = VolumeMetrics(postprocess=largest_component)
    _update(single, rows, range(len(rows)))
    expected = single.compute()
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt") == expected
    naive = VolumeMetrics(postprocess=largest_component)  # counting the padded repeat
    sampler_order = [
        i
        for r in range(2)
        for i in DistributedSampler(range(7), num_replicas=2, rank=r, shuffle=False)
    ]
    assert len(sampler_order) == 8 and len(set(sampler_order)) == 7
    _update(naive, rows, sampler_order)
    assert naive.compute() == expected  # deduplicated there too


def test_lightning_validation_with_two_cpu_processes(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """The trained tiny model validated by Lightning with ddp_spawn on 2 CPU ranks vs 1 process."""
    import lightning as L
    from helpers import compose
    from omegaconf import OmegaConf

    from brainseg.checkpoint import read_checkpoint
    from brainseg.config import instantiate_setting
    from brainseg.training.module import SegmentationModule

    cfg = compose(
        [
            f"data.root={synthetic_root}",
            f"data.cache_dir={tiny_run.parent / 'cache'}",
            "data.split.n_val=2",
            "data.preprocess.image_size=32",
            "data.batch_size=3",
            "data.num_workers=0",
        ]
    )
    OmegaConf.resolve(cfg.data)
    checkpoint = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    module = SegmentationModule(**checkpoint["hyper_parameters"])  # the suite's own run
    module.load_state_dict(checkpoint["state_dict"])
    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        datamodule = instantiate_setting("data", cfg.data)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy=strategy,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        (metrics,) = trainer.validate(module, datamodule=datamodule)
        results[devices] = [
            metrics[f"val/{k}"] for k in ("dsc_volume", "hd95", "nsd", "lesion_recall")
        ]
    assert results[2] == pytest.approx(
        results[1], abs=1e-6
    )  # surface metrics see every rank's slices too
    assert np.isfinite(results[1]).all()
