"""The training-slice sampler (flat index = offset of volume + slice)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from brainseg.errors import ConfigError

SAMPLINGS = ("lesion_weighted", "uniform")


def stream_seed(*keys: int) -> int:
    """A seed for an independent random stream per key tuple (seed, epoch)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def check_sampling(kind: str) -> str:
    """`data.sampling`, or a ConfigError naming the valid ones."""
    if kind not in SAMPLINGS:
        raise ConfigError(f"data.sampling={kind!r} is unknown; choose one of {list(SAMPLINGS)}")
    return kind


def lesion_slice_weights(lesion_areas: np.ndarray) -> np.ndarray:
    """Reference rule: p(slice) proportional to its lesion area plus 10% of the volume's mean area.

    A volume without any lesion is sampled uniformly (the reference divides by zero there).
    """
    areas = lesion_areas.astype(np.float64)
    weights = areas + areas.mean() * 0.1
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(areas), 1.0 / len(areas))


class SliceSampler(Sampler[int]):
    """One epoch of training slices.

    `lesion_weighted`: a volume uniformly, then a slice by `lesion_slice_weights`; `uniform`: a
    permutation of all slices. Every epoch draws as many slices as there are, from its own stream
    (seed, epoch), so a seed gives the same slices on any device. Under DDP Lightning wraps it in
    its DistributedSamplerWrapper, which gives rank r every world-size-th slice of the epoch.

    Lightning calls `set_epoch` at the start of every epoch (also after a resume, and through its
    wrapper under DDP), so a resumed run continues the stream; without a trainer (benchmarks,
    tests) each pass is the next epoch.
    """

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
        """The slice indices of the current epoch; the next call draws the next epoch
        (unless `set_epoch` says otherwise)."""
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch))
        self.epoch += 1
        if self.kind == "uniform":
            return torch.randperm(self.total, generator=generator)
        volumes = torch.randint(len(self.weights), (self.total,), generator=generator)
        slices = torch.multinomial(self.weights[volumes], 1, generator=generator)[:, 0]
        return self.offsets[volumes] + slices

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())
