"""data.loader=device on CPU tensors: kornia presets, the lesion-weighted draw, seeding, epoch
length, DDP streams, and validation identical to the workers path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, compose_run, tiny_datamodule
from hydra.utils import instantiate
from scipy import ndimage, stats
from torch.utils.data import DataLoader, DistributedSampler

from brainseg.data.datamodule import LGGDataModule, resolve_loader
from brainseg.data.device_loader import DeviceEvalLoader, DeviceTrainLoader, EpochSampler
from brainseg.data.sampling import lesion_slice_weights
from brainseg.errors import ConfigError
from brainseg.metrics import VolumeDice


def _device_augmentation(preset: str) -> torch.nn.Module:
    return instantiate(compose([f"data/augmentation={preset}"]).data.augmentation.device)


def _datamodule(root: Path, cache: Path, *overrides: str) -> LGGDataModule:
    dm = tiny_datamodule(root, cache, *overrides)
    dm.setup("fit")
    return dm


def _blobs(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) images that are 0.1 outside and 0.9 inside random discs,
    all channels alike."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(size // 4, 3 * size // 4, (n, 2, 1, 1), generator=g)
    radii = torch.randint(size // 8, size // 4, (n, 1, 1), generator=g)
    inside = (yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2 < radii**2
    return (0.1 + 0.8 * inside.float())[:, None].expand(n, 3, size, size).clone()


@pytest.mark.parametrize("preset", ["reference", "strong"])
def test_image_and_mask_share_the_geometry(preset: str) -> None:
    torch.manual_seed(0)
    image = _blobs(16, 48, seed=1)
    mask = (image[:, :1] > 0.5).float()  # the mask is a threshold of the image
    out_image, out_mask = _device_augmentation(preset)(image, mask)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour: still exactly 0/1
    assert not torch.equal(out_mask, mask)  # it did move things
    again = (out_image[:, :1] > 0.5).numpy()[:, 0]
    truth = out_mask.numpy()[:, 0].astype(bool)
    band = np.stack(
        [
            ndimage.binary_dilation(t, iterations=2) & ~ndimage.binary_erosion(t, iterations=2)
            for t in truth
        ]
    )
    assert (again != truth)[~band].sum() == 0


def test_reference_parameter_ranges_and_flip_probability() -> None:
    augmentation = _device_augmentation("reference")
    torch.manual_seed(0)
    image = torch.rand(4000, 3, 8, 8)
    augmentation(image, torch.zeros(4000, 1, 8, 8))
    affine, flip = (p.data for p in augmentation._params)
    angle, scale = affine["angle"], affine["scale"]
    assert angle.abs().max() <= 15 and angle.min() < -14.5 and angle.max() > 14.5
    assert scale.min() >= 0.95 and scale.max() <= 1.05 and torch.equal(scale[:, 0], scale[:, 1])
    flips = int(flip["batch_prob"].sum())
    assert stats.binomtest(flips, 4000, 0.5).pvalue > 1e-3


def test_lesion_weighted_frequencies_follow_the_rule() -> None:
    areas = [np.array([0, 100, 30, 0]), np.array([5, 5, 5]), np.zeros(5)]
    sampler = EpochSampler("lesion_weighted", areas, num_samples=30000, seed=3)
    counts = np.bincount(sampler.indices().numpy(), minlength=12)
    expected = np.concatenate([lesion_slice_weights(a) / len(areas) for a in areas]) * 30000
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_uniform_epochs_cover_every_slice_and_ranks_are_disjoint() -> None:
    areas = [np.ones(7), np.ones(6)]
    one = EpochSampler("uniform", areas, 13, seed=0).indices()
    assert sorted(one.tolist()) == list(range(13))
    ranks = [
        EpochSampler("uniform", areas, 7, seed=0, rank=r, world_size=2).indices().tolist()
        for r in range(2)
    ]
    assert set(ranks[0]) | set(ranks[1]) == set(range(13))
    weighted = [
        EpochSampler("lesion_weighted", areas, 200, seed=0, rank=r, world_size=2).indices()
        for r in range(2)
    ]
    assert not torch.equal(*weighted)  # each rank its own stream


def _epoch(loader: DeviceTrainLoader) -> list[torch.Tensor]:
    return [
        torch.cat([b["image"].flatten(), b["mask"].flatten(), b["slice"].float()]) for b in loader
    ]


def test_seeded_batches_reproduce_and_resume(synthetic_root: Path, tmp_path: Path) -> None:
    def loader(seed: int) -> DeviceTrainLoader:
        dm = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=device", f"seed={seed}")
        return dm.train_dataloader()

    a, b, other = loader(7), loader(7), loader(8)
    first = _epoch(a)
    assert all(torch.equal(x, y) for x, y in zip(first, _epoch(b)))
    assert not all(torch.equal(x, y) for x, y in zip(first, _epoch(other)))
    second = _epoch(a)  # the next epoch draws anew
    assert not all(torch.equal(x, y) for x, y in zip(first, second))
    a.sampler.set_epoch(1)  # what Lightning does when a run resumes at epoch 1
    assert all(torch.equal(x, y) for x, y in zip(second, _epoch(a)))


def test_epoch_length_equals_the_workers_path(synthetic_root: Path, tmp_path: Path) -> None:
    workers = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=workers")
    device = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=device")
    assert len(device.train_dataloader()) == len(workers.train_dataloader())
    train = workers.datasets["train"]
    for rank in range(
        2
    ):  # under DDP Lightning puts a DistributedSampler into the workers' DataLoader
        split = DataLoader(
            train, batch_size=4, drop_last=True, sampler=DistributedSampler(train, 2, rank)
        )
        ranked = DeviceTrainLoader(
            device.device_slices["train"], 4, "lesion_weighted", 0, None, rank, 2
        )
        assert len(ranked) == len(split) == sum(1 for _ in ranked)
    val = device._device_slices("val", torch.device("cpu"))
    seen = {
        (int(p), int(z))
        for rank in range(2)
        for b in DeviceEvalLoader(val, 3, rank, 2)
        for p, z in zip(b["patient"], b["slice"])
    }
    assert len(seen) == len(val)  # the ranks' validation stripes cover every slice


def test_validation_is_identical_through_both_paths(synthetic_root: Path, tmp_path: Path) -> None:
    workers = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=workers")
    device = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=device")
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    scores = []
    for dm in (workers, device):
        metric = VolumeDice()
        batches = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
        with torch.no_grad():
            for batch in batches:
                metric.update(
                    torch.sigmoid(net(batch["image"])),
                    batch["mask"],
                    batch["patient"],
                    batch["slice"],
                )
        scores.append((batches, metric.per_volume()))
    (workers_batches, workers_dice), (device_batches, device_dice) = scores
    for w, d in zip(workers_batches, device_batches, strict=True):
        assert w.keys() == d.keys() and all(torch.equal(w[k], d[k]) for k in w)
    assert workers_dice == device_dice and len(device_dice) == 2


def test_auto_picks_device_when_the_preset_has_a_device_version() -> None:
    assert resolve_loader("auto", {"workers": None, "device": None}) == "device"
    assert resolve_loader("auto", {"workers": None}) == "workers"
    with pytest.raises(
        ConfigError, match=r"data.loader=device: data.augmentation has no 'device' version"
    ):
        resolve_loader("device", {"workers": None})
    with pytest.raises(
        ConfigError,
        match=r"data.loader='gpu' is unknown; choose one of \['workers', 'device', 'auto'\]",
    ):
        resolve_loader("gpu", {"workers": None, "device": None})


@pytest.mark.slow
def test_short_fit_through_the_device_loader(synthetic_root: Path, tmp_path: Path) -> None:
    from brainseg.training.pipeline import train

    cfg = compose_run(
        synthetic_root,
        tmp_path / "run",
        tmp_path / "cache",
        "data.loader=device",
        "data/augmentation=strong",
        "trainer.max_epochs=1",
        "+callbacks.speed._target_=bench.speed.TrainingSpeed",
    )
    metrics = train(cfg)
    assert len(metrics.history) == 1 and len(metrics.best.per_patient) == 2
    with open(tmp_path / "run" / "csv" / "metrics.csv") as fh:
        speed = next(row for row in csv.DictReader(fh) if row.get("speed/samples_per_s"))
    assert float(speed["speed/samples_per_s"]) > 0 and 0 < float(speed["speed/data_wait"]) < 1
