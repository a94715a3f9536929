"""Slices of preprocessed volumes as training/evaluation samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg.data.preprocess import PreprocessedVolume
from brainseg.errors import DataError


def context_indices(count: int, context: int, name: str = "") -> np.ndarray:
    """(count, 2 * context + 1): each slice's stack, the ends repeating their last neighbour."""
    if context and count <= context:
        raise DataError(
            f"{name}: {count} slices cannot give {context} neighbours on each side "
            "(data.preprocess.context_slices)"
        )
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(count)[:, None] + offsets, 0, count - 1)


class SliceDataset(Dataset):
    """Every slice of the given (masked) volumes: `image` (S, S, 3 per slice of the stack) in
    [0, 1], `mask` (1, S, S), the volume's z-score `mean`/`std` and the `patient`/`slice` indices
    the volume metric groups by. `normalize_batch` z-scores whole batches on the device, several
    times cheaper than per sample, after the [0, 1] augmentations."""

    def __init__(
        self,
        volumes: Sequence[PreprocessedVolume],
        transform: Callable | None = None,
        context_slices: int = 0,
    ) -> None:
        self.volumes = list(volumes)
        self.transform = transform
        self.index = [(v, z) for v, vol in enumerate(self.volumes) for z in range(len(vol.image))]
        self.stacks = [context_indices(len(v.image), context_slices, v.name) for v in self.volumes]
        repeat = 2 * context_slices + 1
        self._mean = [torch.tensor(v.channel_mean * repeat, dtype=torch.float32) for v in volumes]
        self._std = [torch.tensor(v.channel_std * repeat, dtype=torch.float32) for v in volumes]

    def __len__(self) -> int:
        return len(self.index)

    def lesion_areas(self) -> list[np.ndarray]:
        """Per-volume arrays of lesion pixels per slice, for the lesion-weighted sampler."""
        return [np.asarray(v.mask).sum(axis=(1, 2)) for v in self.volumes]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        v, z = self.index[idx]
        volume = self.volumes[v]
        image = np.concatenate([volume.slice_image(j) for j in self.stacks[v][z]], axis=-1)
        mask = np.asarray(volume.mask[z])
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
    """(N, S, S, C) [0, 1] images -> (N, C, S, S) z-scored; mean/std are (N, C) or (C,)."""
    channels = image.shape[-1]
    mean, std = mean.reshape(-1, channels, 1, 1), std.reshape(-1, channels, 1, 1)
    return ((image.permute(0, 3, 1, 2) - mean) / std).contiguous()


def normalize_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A loader batch made network-ready, each sample with its own volume's statistics."""
    batch["image"] = zscore_channels_first(batch["image"], batch["mean"], batch["std"])
    return batch
