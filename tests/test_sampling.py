"""The training sampler: the reference's lesion-weighted rule, uniform epochs, resuming by epoch
and the DDP ranks' share of an epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from scipy import stats

from brainseg.data.sampling import SliceSampler, lesion_slice_weights
from brainseg.errors import ConfigError


def test_weights_follow_the_reference_rule() -> None:
    areas = np.array([0, 0, 10, 30, 0])
    expected = (areas + 0.1 * areas.mean()) / (areas + 0.1 * areas.mean()).sum()
    np.testing.assert_allclose(lesion_slice_weights(areas), expected)
    np.testing.assert_allclose(lesion_slice_weights(np.zeros(4)), 0.25)  # no lesion: uniform


def test_lesion_weighted_frequencies_follow_the_rule() -> None:
    """A volume uniformly, then a slice by its weight: chi-square over many epochs' draws."""
    areas = [np.array([0, 100, 30, 0]), np.array([5, 5, 5]), np.zeros(5)]
    sampler = SliceSampler("lesion_weighted", areas, seed=3)
    draws = torch.cat([sampler.draw() for _ in range(2500)])
    counts = np.bincount(draws.numpy(), minlength=12)
    expected = np.concatenate([lesion_slice_weights(a) / len(areas) for a in areas]) * len(draws)
    assert len(sampler) == 12 and stats.chisquare(counts, expected).pvalue > 1e-3


def test_uniform_epochs_cover_every_slice_once() -> None:
    sampler = SliceSampler("uniform", [np.ones(7), np.ones(6)], seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(13)) and first != second


@pytest.mark.parametrize("kind", ["lesion_weighted", "uniform"])
def test_set_epoch_resumes_the_random_stream(kind: str) -> None:
    """A resumed run (a fresh sampler told its epoch by Lightning) draws what an unbroken run
    draws; another seed draws otherwise."""
    areas = [np.array([0, 100, 0]), np.array([5, 5, 5, 5])]
    unbroken = SliceSampler(kind, areas, seed=3)
    epochs = [list(unbroken) for _ in range(3)]
    resumed = SliceSampler(kind, areas, seed=3)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2] != epochs[0]
    unbroken.set_epoch(1)
    assert list(unbroken) == epochs[1]
    assert [list(SliceSampler(kind, areas, seed=4)) for _ in range(3)] != epochs


@pytest.mark.parametrize("kind", ["lesion_weighted", "uniform"])
def test_ddp_ranks_share_out_the_epoch_of_one_sampler(kind: str) -> None:
    """Under DDP Lightning wraps the sampler in its DistributedSamplerWrapper: rank r takes every
    second slice of the one-process epoch (padded by a repeat to equal lengths), and the wrapper's
    set_epoch reaches the sampler, so a resumed DDP run continues the stream too."""
    areas = [np.arange(7), np.ones(6)]  # 13 slices: rank shares padded by a repeat
    for epoch in (0, 3):
        single = SliceSampler(kind, areas, seed=5)
        single.set_epoch(epoch)
        padded = list(single)
        padded.append(padded[0])
        for rank in range(2):
            wrapped = DistributedSamplerWrapper(
                SliceSampler(kind, areas, seed=5), num_replicas=2, rank=rank, shuffle=False
            )
            wrapped.set_epoch(epoch)
            assert list(wrapped) == padded[rank::2] and len(wrapped) == 7


def test_unknown_sampling_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data.sampling='random' is unknown"):
        SliceSampler("random", [np.ones(3)], seed=0)
