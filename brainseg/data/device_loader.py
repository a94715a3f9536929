"""`data.loader=device`: preprocessed volumes held on the training device, batches drawn and
augmented there, so that a GPU never waits for CPU workers.

The slices are copied to the device once in their cache storage type (uint16 images, uint8 masks:
1.3 GB for the whole LGG training set at 256 px) and converted per batch. Batches have the
workers path's layout ((N, S, S, 3) images in [0, 1], (N, 1, S, S) masks, per-sample volume
statistics, patient and slice indices), so `normalize_batch` z-scores both paths alike.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from brainseg.data.preprocess import PreprocessedVolume
from brainseg.data.sampling import SliceSampler, stream_seed

UINT16_SCALE = np.float32(1 / 65535)  # the factor PreprocessedVolume.slice_image uses


class DeviceSlices:
    """Every slice of some volumes, stacked on one device, indexed like `SliceDataset`."""

    def __init__(self, volumes: Sequence[PreprocessedVolume], device: torch.device | str) -> None:
        self.volumes = list(volumes)
        self.device = torch.device(device)
        self.lengths = [len(v.image) for v in self.volumes]
        self.offsets = np.cumsum([0] + self.lengths)[:-1]
        images = np.concatenate([np.asarray(v.image) for v in self.volumes])
        # uint16 kept as its int16 bit pattern: indexing kernels exist for int16 on every backend
        self.stored_uint16 = images.dtype == np.uint16
        images = (
            images.view(np.int16) if self.stored_uint16 else images.astype(np.float32, copy=False)
        )
        self.image = torch.from_numpy(images).to(self.device)
        masks = [
            np.asarray(v.mask) if v.mask is not None else np.zeros(v.image.shape[:3], np.uint8)
            for v in self.volumes
        ]
        self.mask = torch.from_numpy(np.concatenate(masks).astype(np.uint8, copy=False)).to(
            self.device
        )
        self.patient = torch.repeat_interleave(
            torch.arange(len(self.volumes)), torch.tensor(self.lengths)
        ).to(self.device)
        self.slice = torch.cat([torch.arange(n) for n in self.lengths]).to(self.device)
        self.mean = torch.tensor(
            [v.channel_mean for v in self.volumes], dtype=torch.float32, device=self.device
        )
        self.std = torch.tensor(
            [v.channel_std for v in self.volumes], dtype=torch.float32, device=self.device
        )

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def lesion_areas(self) -> list[np.ndarray]:
        """Per-volume lesion pixels per slice, as `SliceDataset.lesion_areas`."""
        areas = self.mask.sum(dim=(1, 2)).cpu().numpy()
        return [areas[o : o + n] for o, n in zip(self.offsets, self.lengths)]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The samples at flat indices `index`, in the workers path's batch layout."""
        image = self.image[index]
        if self.stored_uint16:
            image = (image.int() & 0xFFFF).float() * UINT16_SCALE
        patient = self.patient[index]
        return {
            "image": image,
            "mask": self.mask[index, None].float(),
            "mean": self.mean[patient],
            "std": self.std[patient],
            "patient": patient,
            "slice": self.slice[index],
        }


@contextlib.contextmanager
def seeded_device_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the device's global generator (which kornia draws its parameters from) for one block,
    leaving the training's own random state (dropout, ...) untouched."""
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


class DeviceTrainLoader:
    """Training batches on the device: the slices `SliceSampler` draws (the workers path's, for
    the same seed and epoch), augmented as a whole batch (each sample with its own parameters) by
    `augmentation(image, mask)` on (N, C, S, S) tensors.

    Epoch length as the workers path: every training slice once per epoch in all (split over
    the ranks as Lightning's DistributedSampler does), the last partial batch dropped when there
    is more than one batch.
    """

    def __init__(
        self,
        slices: DeviceSlices,
        batch_size: int,
        sampling: str,
        seed: int,
        augmentation: Callable | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.slices = slices
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.sampler = SliceSampler(sampling, slices.lesion_areas(), seed, rank, world_size)
        per_rank = len(self.sampler)
        self.drop_last = len(slices) > batch_size
        self.num_batches = (
            per_rank // batch_size if self.drop_last else math.ceil(per_rank / batch_size)
        )

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler = self.sampler
        epoch = sampler.epoch
        order = sampler.draw().to(self.slices.device, non_blocking=True)
        for b in range(self.num_batches):
            batch = self.slices.batch(order[b * self.batch_size : (b + 1) * self.batch_size])
            if self.augmentation is not None:
                with seeded_device_rng(
                    self.slices.device, stream_seed(sampler.seed, epoch, sampler.rank, b)
                ):
                    image, mask = self.augmentation(
                        batch["image"].permute(0, 3, 1, 2), batch["mask"]
                    )
                batch["image"], batch["mask"] = image.permute(0, 2, 3, 1), mask
            yield batch


class DeviceEvalLoader:
    """Validation/test batches on the device: every slice in order, without augmentation; under
    DDP each rank takes every world_size-th slice, padded by repeats as DistributedSampler does
    (the volume metric counts a (patient, slice) once)."""

    def __init__(
        self, slices: DeviceSlices, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.slices = slices
        self.batch_size = batch_size
        per_rank = math.ceil(len(slices) / world_size)
        order = torch.arange(per_rank * world_size) % len(slices)
        self.order = order[rank::world_size].to(slices.device)

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.order), self.batch_size):
            yield self.slices.batch(self.order[start : start + self.batch_size])
