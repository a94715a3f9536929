"""Training slice samplers over a list of volumes (flat index = offset of volume + slice)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from brainseg.errors import ConfigError

SAMPLINGS = ("lesion_weighted", "uniform")


def stream_seed(*keys: int) -> int:
    """A seed for an independent random stream per key tuple (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def lesion_slice_weights(lesion_areas: np.ndarray) -> np.ndarray:
    """Reference rule: p(slice) proportional to its lesion area plus 10% of the volume's mean area.

    A volume without any lesion is sampled uniformly (the reference divides by zero there).
    """
    areas = lesion_areas.astype(np.float64)
    weights = areas + areas.mean() * 0.1
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(areas), 1.0 / len(areas))


class LesionWeightedSampler(Sampler[int]):
    """Draws a volume uniformly, then a slice by `lesion_slice_weights`; `num_samples` per epoch.

    Each (seed, epoch) has its own stream. Lightning calls `set_epoch` at the start of every
    epoch (also after a resume, and through its DistributedSamplerWrapper under DDP), so a resumed
    run continues the stream; without a trainer each pass is the next epoch.
    """

    def __init__(self, lesion_areas: Sequence[np.ndarray], num_samples: int, seed: int = 0) -> None:
        self.weights = [torch.as_tensor(lesion_slice_weights(a)) for a in lesion_areas]
        self.offsets = np.cumsum([0] + [len(a) for a in lesion_areas])[:-1].tolist()
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch))
        self.epoch += 1
        volumes = torch.randint(
            len(self.weights), (self.num_samples,), generator=generator
        ).tolist()
        for v in volumes:
            yield self.offsets[v] + int(torch.multinomial(self.weights[v], 1, generator=generator))


def make_sampler(kind: str, lesion_areas: Sequence[np.ndarray], seed: int) -> Sampler[int] | None:
    """`None` means a plain shuffle of all slices (uniform)."""
    if kind == "uniform":
        return None
    if kind == "lesion_weighted":
        return LesionWeightedSampler(lesion_areas, sum(len(a) for a in lesion_areas), seed)
    raise ConfigError(f"data.sampling={kind!r} is unknown; choose one of {list(SAMPLINGS)}")
