"""data.loader=device on CPU tensors: the kornia pipeline built from the albumentations presets,
the same slices as the workers path, seeding, epoch length, DDP stripes, validation identical to
the workers path, and `auto` by device."""

from __future__ import annotations

import csv
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import compose, compose_run, tiny_datamodule
from hydra.utils import instantiate
from scipy import ndimage, stats
from torch.utils.data import DataLoader, DistributedSampler

from brainseg.data.datamodule import LGGDataModule, auto_loader
from brainseg.data.device_augmentation import device_augmentation
from brainseg.data.device_loader import DeviceEvalLoader, DeviceTrainLoader
from brainseg.errors import ConfigError
from brainseg.metrics import VolumeMetrics
from brainseg.postprocessing import largest_component


def _preset(preset: str) -> A.Compose:
    return instantiate(compose([f"data/augmentation={preset}"]).data.augmentation, _convert_="all")


def _device_augmentation(preset: str) -> torch.nn.Module:
    return device_augmentation(_preset(preset))


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
    # albumentations' Affine scales x and y independently unless keep_ratio=True
    assert scale.min() >= 0.95 and scale.max() <= 1.05
    assert not torch.equal(scale[:, 0], scale[:, 1])
    flips = int(flip["batch_prob"].sum())
    assert stats.binomtest(flips, 4000, 0.5).pvalue > 1e-3


def test_fixed_geometry_equals_albumentations() -> None:
    """With every random draw pinned, the device version reproduces albumentations' output:
    rotation direction, scale per axis, flips, masks nearest."""
    spec = A.Compose(
        [
            A.Affine(rotate=(20, 20), scale={"x": (1.1, 1.1), "y": (0.9, 0.9)}, p=1.0),
            A.HorizontalFlip(p=1.0),
            A.VerticalFlip(p=1.0),
        ]
    )
    image = _blobs(4, 48, seed=2) * torch.rand(4, 3, 1, 1)
    mask = (image[:, :1] > 0.3).float()
    out_image, out_mask = device_augmentation(spec)(image, mask)
    for i in range(4):
        expected = spec(
            image=image[i].permute(1, 2, 0).numpy(), mask=mask[i, 0].numpy().astype(np.uint8)
        )
        np.testing.assert_allclose(out_image[i].permute(1, 2, 0), expected["image"], atol=1e-4)
        np.testing.assert_array_equal(out_mask[i, 0], expected["mask"])


def test_strong_parameters_follow_albumentations() -> None:
    """Brightness/contrast, gamma and noise drawn from albumentations' ranges, images kept in
    [0, 1], elastic displacements of albumentations' size (alpha in pixels)."""
    augmentation = _device_augmentation("strong")
    torch.manual_seed(0)
    out, _ = augmentation(torch.full((400, 3, 32, 32), 0.5), torch.zeros(400, 1, 32, 32))
    params = {
        type(m).__name__: p.data for m, p in zip(augmentation.children(), augmentation._params)
    }
    brightness = params["BrightnessContrast"]
    assert 0.9 <= brightness["alpha"].min() and brightness["alpha"].max() <= 1.1
    assert -0.1 <= brightness["beta"].min() and brightness["beta"].max() <= 0.1
    applied = int((brightness["batch_prob"] > 0.5).sum())
    assert stats.binomtest(applied, 400, 0.5).pvalue > 1e-3
    gamma = params["RandomGamma"]["gamma_factor"]
    assert 0.8 <= gamma.min() and gamma.max() <= 1.2 and 0 <= out.min() and out.max() <= 1
    noise_std = params["GaussNoise"]["noise"].std(dim=(1, 2, 3))
    assert 0.01 * 0.8 < noise_std.min() and noise_std.max() < 0.03 * 1.2
    # the elastic field against albumentations' own, on an image whose value is x / 63
    reference = A.ElasticTransform(alpha=200, sigma=6, p=1.0)
    elastic = device_augmentation(reference)
    ramp = torch.linspace(0, 1, 64).expand(16, 3, 64, 64).contiguous()
    shift = (elastic(ramp, torch.zeros(16, 1, 64, 64))[0] - ramp)[:, 0, 20:44, 20:44] * 63
    reference.set_random_seed(1)
    image = ramp[0].permute(1, 2, 0).numpy().copy()
    moved = np.stack([reference(image=image)["image"] for _ in range(48)])
    expected = np.abs(moved - image)[:, 20:44, 20:44, 0].mean() * 63
    assert expected > 1 and 0.8 < float(shift.abs().mean()) / expected < 1.25


def test_other_transforms_are_refused_with_the_way_out() -> None:
    with pytest.raises(
        ConfigError,
        match=r"data.augmentation: CLAHE has no device version; use data.loader=workers",
    ):
        device_augmentation(A.Compose([A.HorizontalFlip(), A.CLAHE()]))
    with pytest.raises(ConfigError, match=r"Affine\(shear=.*use data.loader=workers"):
        device_augmentation(A.Affine(shear=10))
    with pytest.raises(ConfigError, match=r"OneOf has no device version"):
        device_augmentation(A.OneOf([A.HorizontalFlip()]))


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
        metric = VolumeMetrics(postprocess=largest_component)
        batches = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
        with torch.no_grad():
            for batch in batches:
                metric.update(
                    torch.sigmoid(net(batch["image"])),
                    batch["mask"],
                    batch["patient"],
                    batch["slice"],
                )
        scores.append((batches, {p: m["dsc"] for p, m in metric.compute().items()}))
    (workers_batches, workers_dice), (device_batches, device_dice) = scores
    for w, d in zip(workers_batches, device_batches, strict=True):
        assert w.keys() == d.keys() and all(torch.equal(w[k], d[k]) for k in w)
    assert workers_dice == device_dice and len(device_dice) == 2


@pytest.mark.parametrize("sampling", ["lesion_weighted", "uniform"])
def test_both_paths_draw_the_same_slices(
    synthetic_root: Path, tmp_path: Path, sampling: str
) -> None:
    """Same seed and epoch, same batches: without augmentation even the pixels agree."""

    def batches(loader: str, epoch: int) -> list[dict[str, torch.Tensor]]:
        dm = _datamodule(
            synthetic_root,
            tmp_path / "cache",
            f"data.loader={loader}",
            f"data.sampling={sampling}",
            "data/augmentation=none",
            "seed=11",
        )
        train = dm.train_dataloader()
        train.sampler.set_epoch(epoch)
        return [dm.on_after_batch_transfer(b, 0) for b in train]

    for epoch in (0, 2):
        workers, device = batches("workers", epoch), batches("device", epoch)
        assert len(workers) == len(device) > 1
        for w, d in zip(workers, device):
            assert torch.equal(w["patient"], d["patient"]) and torch.equal(w["slice"], d["slice"])
            assert torch.allclose(w["image"], d["image"]) and torch.equal(w["mask"], d["mask"])


def test_auto_follows_the_training_device(synthetic_root: Path, tmp_path: Path) -> None:
    assert auto_loader(torch.device("cuda", 1)) == "device"
    assert auto_loader(torch.device("cpu")) == "workers"
    dm = _datamodule(synthetic_root, tmp_path / "cache", "data.loader=auto")  # no trainer: CPU
    assert dm.loader == "workers" and isinstance(dm.train_dataloader(), DataLoader)
    on_gpu = type(  # what setup() reads from a Lightning trainer on a GPU (nothing is moved)
        "Trainer",
        (),
        {
            "strategy": type("S", (), {"root_device": torch.device("cuda", 0)})(),
            "global_rank": 0,
            "world_size": 1,
        },
    )()
    dm = tiny_datamodule(synthetic_root, tmp_path / "cache", "data.loader=auto")
    dm.trainer = on_gpu
    dm.setup("fit")
    assert dm.loader == "device" and dm.device_augmentation is not None
    extra = "+data.augmentation.transforms=[{_target_: albumentations.CLAHE}]"
    dm = tiny_datamodule(synthetic_root, tmp_path / "cache", "data.loader=auto", extra)
    dm.trainer = on_gpu
    with pytest.raises(ConfigError, match=r"CLAHE has no device version; use data.loader=workers"):
        dm.setup("fit")
    with pytest.raises(
        ConfigError,
        match=r"data.loader='gpu' is unknown; choose one of \['workers', 'device', 'auto'\]",
    ):
        tiny_datamodule(synthetic_root, tmp_path / "cache", "data.loader=gpu")


def test_device_path_refuses_a_transform_it_lacks(synthetic_root: Path, tmp_path: Path) -> None:
    extra = "+data.augmentation.transforms=[{_target_: albumentations.CLAHE}]"
    with pytest.raises(
        ConfigError, match=r"^data.augmentation: CLAHE has no device version; use data.loader="
    ):
        tiny_datamodule(synthetic_root, tmp_path / "cache", "data.loader=device", extra)
    assert tiny_datamodule(synthetic_root, tmp_path / "cache", "data.loader=workers", extra)


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
    assert float(speed["speed/epoch_s"]) > 0  # the epoch's wall time, validation included
