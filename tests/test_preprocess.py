"""The reference protocol, compared with a direct port of the reference program's numpy steps."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg.data.preprocess import PreprocessConfig, preprocess
from brainseg.data.reader import PatientVolume
from brainseg.errors import ConfigError


def _reference_crop_pad(volume: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """crop_sample + pad_sample of the reference program (brain-segmentation-pytorch/utils.py)."""
    volume = volume.copy()
    volume[volume < np.max(volume) * 0.1] = 0
    z = np.nonzero(volume.max(axis=(1, 2, 3)))[0]
    y = np.nonzero(volume.max(axis=(0, 2, 3)))[0]
    x = np.nonzero(volume.max(axis=(0, 1, 3)))[0]
    sl = (slice(z.min(), z.max() + 1), slice(y.min(), y.max() + 1), slice(x.min(), x.max() + 1))
    volume, mask = volume[sl], mask[sl]
    a, b = volume.shape[1], volume.shape[2]
    if a != b:
        diff = (max(a, b) - min(a, b)) / 2.0
        pad = (int(np.floor(diff)), int(np.ceil(diff)))
        padding = ((0, 0), (0, 0), pad) if a > b else ((0, 0), pad, (0, 0))
        mask = np.pad(mask, padding)
        volume = np.pad(volume, padding + ((0, 0),))
    return volume, mask


@pytest.fixture
def head() -> PatientVolume:
    """An off-centre, non-square bright box in a dim, noisy 14-slice volume;
    slices 0, 1 and 13 are dark."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 20, (14, 40, 48, 3)).astype(np.uint8)  # < 10% of max: cropped away
    image[2:13, 5:30, 10:43] = rng.integers(60, 250, (11, 25, 33, 3))
    mask = np.zeros((14, 40, 48), np.uint8)
    mask[6:9, 12:18, 20:26] = 1
    return PatientVolume("P", tuple(range(1, 15)), image, mask)


def test_crop_and_pad_match_reference(head: PatientVolume) -> None:
    cfg = PreprocessConfig(image_size=None, rescale_percentiles=None, zscore=False)
    out = preprocess(head, cfg)
    ref_image, ref_mask = _reference_crop_pad(head.image[1:-1], head.mask[1:-1])
    np.testing.assert_allclose(out.image, ref_image.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(out.mask, ref_mask)
    assert out.numbers == list(range(3, 14))  # slice 1 dropped, 2 dark, 14 dropped
    assert out.geometry.slice_indices == list(range(2, 13))
    assert out.geometry.box == (5, 30, 10, 43)
    assert out.geometry.pad == (4, 4, 0, 0) and out.geometry.padded_shape == (33, 33)


def test_geometry_maps_back_to_original(head: PatientVolume) -> None:
    out = preprocess(head, PreprocessConfig(image_size=None))
    g = out.geometry
    top, bottom, left, right = g.pad
    restored = np.zeros(g.original_shape, np.uint8)
    y0, y1, x0, x1 = g.box
    unpadded = out.mask[:, top : out.mask.shape[1] - bottom, left : out.mask.shape[2] - right]
    restored[g.slice_indices, y0:y1, x0:x1] = unpadded
    np.testing.assert_array_equal(restored, head.mask)


def test_resize_rescale_and_zscore_statistics(head: PatientVolume) -> None:
    out = preprocess(head, PreprocessConfig(image_size=24))
    assert out.image.shape == (11, 24, 24, 3) and out.image.dtype == np.float32
    assert out.mask.shape == (11, 24, 24) and set(np.unique(out.mask)) <= {0, 1}
    assert out.image.min() == 0.0 and out.image.max() == 1.0
    assert (
        0.08 <= (out.image == 0).mean() <= 0.5
    )  # at or below p10 (the zero padding is part of it)
    assert 0.005 <= (out.image == 1).mean() <= 0.02  # at or above p99
    np.testing.assert_allclose(out.channel_mean, out.image.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out.channel_std, out.image.std(axis=(0, 1, 2)), rtol=1e-5)
    z = (out.image - np.float32(out.channel_mean)) / np.float32(out.channel_std)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_every_step_can_be_switched_off(head: PatientVolume) -> None:
    cfg = PreprocessConfig(
        drop_end_slices=False,
        crop_to_brain=False,
        pad_square=False,
        image_size=None,
        rescale_percentiles=None,
        zscore=False,
    )
    out = preprocess(head, cfg)
    np.testing.assert_allclose(out.image, head.image / np.float32(255))
    np.testing.assert_array_equal(out.mask, head.mask)
    assert out.channel_mean == [0.0, 0.0, 0.0] and out.channel_std == [1.0, 1.0, 1.0]


def test_input_volume_is_not_modified(head: PatientVolume) -> None:
    before = head.image.copy()
    preprocess(head, PreprocessConfig(image_size=16))
    np.testing.assert_array_equal(head.image, before)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"interpolation": "bilinear"}, "data.preprocess.interpolation"),
        ({"image_size": 2}, "data.preprocess.image_size"),
        ({"crop_threshold": 1.5}, "data.preprocess.crop_threshold"),
        ({"rescale_percentiles": (99, 10)}, "data.preprocess.rescale_percentiles"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        PreprocessConfig(**kwargs)
