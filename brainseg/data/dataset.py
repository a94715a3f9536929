"""Slices of preprocessed volumes as training/evaluation samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg.data.preprocess import PreprocessedVolume


class SliceDataset(Dataset):
    """Every slice of the given volumes; items are dicts with `image` (S, S, 3) float32 in [0, 1],
    `mask` (1, S, S) float32, the volume's z-score `mean`/`std` (3,), and the `patient`/`slice`
    indices the volume metric groups by.

    `transform` is an albumentations pipeline on the [0, 1] image, so intensity transforms see
    their usual range; `normalize_batch` then applies the z-score and channel-first layout to a
    whole batch at once (on the training device), which is several times cheaper than per sample.
    """

    def __init__(
        self, volumes: Sequence[PreprocessedVolume], transform: Callable | None = None
    ) -> None:
        self.volumes = list(volumes)
        self.transform = transform
        self.index = [(v, z) for v, vol in enumerate(self.volumes) for z in range(len(vol.image))]
        self._mean = [torch.tensor(v.channel_mean, dtype=torch.float32) for v in self.volumes]
        self._std = [torch.tensor(v.channel_std, dtype=torch.float32) for v in self.volumes]

    def __len__(self) -> int:
        return len(self.index)

    def lesion_areas(self) -> list[np.ndarray]:
        """Per-volume arrays of lesion pixels per slice, for the lesion-weighted sampler."""
        return [np.asarray(v.mask).sum(axis=(1, 2)) for v in self.volumes]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        v, z = self.index[idx]
        volume = self.volumes[v]
        image = volume.slice_image(z)
        mask = (
            np.asarray(volume.mask[z])
            if volume.mask is not None
            else np.zeros(image.shape[:2], np.uint8)
        )
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32)),
            "mean": self._mean[v],
            "std": self._std[v],
            "patient": torch.tensor(v),
            "slice": torch.tensor(z),
        }


def zscore_channels_first(
    image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """(N, S, S, 3) [0, 1] images -> (N, 3, S, S) z-scored; mean/std are (N, 3) or (3,)."""
    mean, std = mean.reshape(-1, 3, 1, 1), std.reshape(-1, 3, 1, 1)
    return ((image.permute(0, 3, 1, 2) - mean) / std).contiguous()


def normalize_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A loader batch made network-ready, each sample with its own volume's statistics."""
    batch["image"] = zscore_channels_first(batch["image"], batch["mean"], batch["std"])
    return batch
