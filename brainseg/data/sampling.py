"""The training-slice sampler (flat index = offset of volume + slice)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from brainseg.errors import ConfigError

SAMPLINGS = ("lesion_weighted", "uniform")


def check_sampling(kind: str) -> str:
    """`data.sampling`, or a ConfigError naming the valid ones."""
    if kind not in SAMPLINGS:
        raise ConfigError(f"data.sampling={kind!r} is unknown; choose one of {list(SAMPLINGS)}")
    return kind


def lesion_slice_weights(lesion_areas: np.ndarray) -> np.ndarray:
    """Reference rule: p(slice) proportional to its lesion area plus 10% of the volume's mean area;
    uniform in a volume without lesion (where the reference divides by zero)."""
    areas = lesion_areas.astype(np.float64)
    weights = areas + areas.mean() * 0.1
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(areas), 1.0 / len(areas))


class SliceSampler(Sampler[int]):
    """One epoch of training slices: `lesion_weighted` draws a volume uniformly, then a slice by
    `lesion_slice_weights`; `uniform` permutes all slices. Each epoch has its own stream (seed,
    epoch), so a seed gives the same slices on any device and a resumed run (Lightning calls
    `set_epoch`, also through its DDP wrapper) continues it; without a trainer each pass is the
    next epoch."""

    def __init__(self, kind: str, lesion_areas: Sequence[np.ndarray], seed: int) -> None:
        self.kind = check_sampling(kind)
        self.seed, self.epoch = seed, 0
        self.total = sum(len(a) for a in lesion_areas)
        self.offsets = torch.tensor(np.cumsum([0] + [len(a) for a in lesion_areas])[:-1])
        longest = max(len(a) for a in lesion_areas)
        self.weights = torch.zeros(len(lesion_areas), longest, dtype=torch.float64)
        for v, areas in enumerate(lesion_areas):
            self.weights[v, : len(areas)] = torch.from_numpy(lesion_slice_weights(areas))

    def __len__(self) -> int:
        return self.total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> torch.Tensor:
        """The slice indices of the current epoch; the next call draws the next one."""
        stream = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(stream >> 1))
        self.epoch += 1
        if self.kind == "uniform":
            return torch.randperm(self.total, generator=generator)
        volumes = torch.randint(len(self.weights), (self.total,), generator=generator)
        slices = torch.multinomial(self.weights[volumes], 1, generator=generator)[:, 0]
        return self.offsets[volumes] + slices

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())
