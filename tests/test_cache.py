"""The preprocessed-volume cache: hits are memory-mapped, edits and settings invalidate,
the data root stays untouched."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import snapshot

import brainseg.data.cache as cache_module
from brainseg.data.cache import VolumeCache
from brainseg.data.preprocess import PreprocessConfig
from brainseg.data.reader import find_patients
from brainseg.errors import ConfigError


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = cache_module.preprocess

    def counting(volume, cfg):
        calls.append(volume.name)
        return original(volume, cfg)

    monkeypatch.setattr(cache_module, "preprocess", counting)
    return calls


def test_second_load_is_a_memory_mapped_hit(
    copied_root: Path, tmp_path: Path, counted: list[str]
) -> None:
    before = snapshot(copied_root)
    cache = VolumeCache(tmp_path / "cache", PreprocessConfig(image_size=32))
    patient = find_patients(copied_root)[0]
    first = cache.load(patient)
    second = cache.load(patient)
    assert counted == [patient.name]
    assert isinstance(second.image, np.memmap) and second.image.dtype == np.uint16
    for z in range(len(first.image)):
        np.testing.assert_allclose(second.slice_image(z), first.slice_image(z), atol=1e-8)
    np.testing.assert_array_equal(second.mask, first.mask)
    assert second.geometry == first.geometry and second.numbers == first.numbers
    assert snapshot(copied_root) == before


def test_cached_values_match_fresh_preprocessing(copied_root: Path, tmp_path: Path) -> None:
    from brainseg.data.preprocess import preprocess
    from brainseg.data.reader import read_patient

    patient = find_patients(copied_root)[1]
    cfg = PreprocessConfig(image_size=32)
    fresh = preprocess(read_patient(patient), cfg)
    VolumeCache(tmp_path / "cache", cfg).load(patient)
    cached = VolumeCache(tmp_path / "cache", cfg).load(patient)
    assert isinstance(cached.image, np.memmap)
    np.testing.assert_allclose(
        np.stack([cached.slice_image(z) for z in range(len(fresh.image))]), fresh.image, atol=1e-5
    )
    np.testing.assert_array_equal(cached.mask, fresh.mask)
    assert cached.channel_mean == fresh.channel_mean and cached.geometry == fresh.geometry


def test_parallel_fill_equals_serial(copied_root: Path, tmp_path: Path) -> None:
    patients = find_patients(copied_root)
    cfg = PreprocessConfig(image_size=32)
    serial = VolumeCache(tmp_path / "a", cfg).load_many(patients, workers=1)
    parallel = VolumeCache(tmp_path / "b", cfg).load_many(patients, workers=2)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.name == b.name and a.channel_std == b.channel_std


def test_changed_file_or_setting_invalidates(
    copied_root: Path, tmp_path: Path, counted: list[str]
) -> None:
    patient = find_patients(copied_root)[0]
    VolumeCache(tmp_path / "cache", PreprocessConfig(image_size=32)).load(patient)
    VolumeCache(tmp_path / "cache", PreprocessConfig(image_size=24)).load(patient)
    assert len(counted) == 2
    mask = patient.masks[5]
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    reloaded = VolumeCache(tmp_path / "cache", PreprocessConfig(image_size=32)).load(patient)
    assert len(counted) == 3 and reloaded.image.shape[1:3] == (32, 32)


def test_unwritable_cache_dir_is_named(copied_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="data.cache_dir"):
        VolumeCache(blocker / "cache", PreprocessConfig()).load(find_patients(copied_root)[0])
