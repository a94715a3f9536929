"""Training samplers: the reference's lesion-weighted rule and its empirical frequencies."""

from __future__ import annotations

from collections import Counter

import numpy as np

from brainseg.data.sampling import LesionWeightedSampler, lesion_slice_weights, make_sampler


def test_weights_follow_the_reference_rule() -> None:
    areas = np.array([0, 0, 10, 30, 0])
    expected = (areas + 0.1 * areas.mean()) / (areas + 0.1 * areas.mean()).sum()
    np.testing.assert_allclose(lesion_slice_weights(areas), expected)
    np.testing.assert_allclose(lesion_slice_weights(np.zeros(4)), 0.25)  # no lesion: uniform


def test_sampler_draws_volumes_uniformly_then_weighted_slices() -> None:
    areas = [np.array([0, 100, 0]), np.array([5, 5, 5, 5, 5, 5, 5])]
    sampler = LesionWeightedSampler(areas, num_samples=40000, seed=1)
    counts = Counter(iter(sampler))
    assert len(sampler) == 40000 and sum(counts.values()) == 40000
    first_volume = sum(counts[i] for i in range(3)) / 40000
    assert abs(first_volume - 0.5) < 0.01
    w = lesion_slice_weights(areas[0])
    for i in range(3):
        assert abs(counts[i] / 40000 - 0.5 * w[i]) < 0.01
    assert list(iter(LesionWeightedSampler(areas, 50, seed=1))) == list(
        iter(LesionWeightedSampler(areas, 50, seed=1))
    )
    again = LesionWeightedSampler(areas, 50, seed=1)
    assert list(iter(again)) != list(iter(again))  # a new epoch draws anew


def test_uniform_is_a_plain_shuffle() -> None:
    assert make_sampler("uniform", [np.ones(3)], 0) is None


def test_set_epoch_resumes_the_random_stream() -> None:
    """A resumed run (a fresh sampler told its epoch by Lightning)
    draws what an unbroken run draws."""
    areas = [np.array([0, 100, 0]), np.array([5, 5, 5, 5])]
    unbroken = LesionWeightedSampler(areas, 30, seed=3)
    epochs = [list(iter(unbroken)) for _ in range(3)]
    resumed = LesionWeightedSampler(areas, 30, seed=3)
    resumed.set_epoch(2)
    assert list(iter(resumed)) == epochs[2] != epochs[0]
    unbroken.set_epoch(1)
    assert list(iter(unbroken)) == epochs[1]
