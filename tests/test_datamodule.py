"""The DataModule and augmentation as composed from conf/: batches, splits, seeding,
binary masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, snapshot, tiny_datamodule
from hydra.utils import instantiate

from brainseg.data.contract import DataProvenance, SegmentationData, check_data_module
from brainseg.errors import ConfigError
from brainseg.runfiles import read_split


@pytest.mark.parametrize("augmentation", ["reference", "strong"])
def test_augmented_masks_stay_binary(augmentation: str) -> None:
    cfg = compose([f"data/augmentation={augmentation}"])
    transform = instantiate(cfg.data.augmentation, _convert_="all")
    transform.set_random_seed(0)
    rng = np.random.default_rng(0)
    image = rng.random((48, 48, 3), dtype=np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:30, 15:35] = 1
    changed = 0
    for _ in range(30):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (48, 48, 3) and np.isfinite(out["image"]).all()
        assert set(np.unique(out["mask"])) <= {0, 1}
        changed += not np.array_equal(out["mask"], mask)
    assert changed > 20  # the transforms do something


def test_batches_splits_and_data_root_untouched(synthetic_root: Path, tmp_path: Path) -> None:
    before = snapshot(synthetic_root)
    dm = tiny_datamodule(synthetic_root, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 32, 32) and set(batch["mask"].unique().tolist()) <= {
        0.0,
        1.0,
    }
    assert len(dm.split.val) == 2 and not set(dm.split.val) & set(dm.split.train)
    val_slices = sum(len(v.image) for v in dm.datasets["val"].volumes)
    seen = [(int(p), int(s)) for b in dm.val_dataloader() for p, s in zip(b["patient"], b["slice"])]
    assert len(seen) == val_slices == len(set(seen))
    # z-scored per volume: near zero mean, unit variance over a whole validation volume
    images = torch.cat([dm.on_after_batch_transfer(b, 0)["image"] for b in dm.val_dataloader()])
    assert abs(float(images.mean())) < 0.2 and abs(float(images.std()) - 1) < 0.2
    dm.write_split(tmp_path)
    written = read_split(tmp_path)
    assert written.val == dm.split.val and written.kind == "reference"
    assert check_data_module(dm) is dm and isinstance(dm, SegmentationData)
    provenance = dm.provenance()
    assert (
        set(provenance) == set(DataProvenance.__annotations__)
        and provenance["split"]["val"] == dm.split.val
    )
    assert provenance["preprocess"]["image_size"] == 32 and provenance["data_root"] == str(
        synthetic_root.resolve()
    )
    assert snapshot(synthetic_root) == before


def test_a_data_module_outside_the_contract_is_named() -> None:
    with pytest.raises(
        ConfigError,
        match=r"data: object lacks \['split', 'patient_names', 'provenance', 'write_split'\]",
    ):
        check_data_module(object())


def test_kfold_from_config(synthetic_root: Path, tmp_path: Path) -> None:
    vals = []
    for fold in range(3):
        dm = tiny_datamodule(
            synthetic_root,
            tmp_path / "cache",
            "data.split.kind=kfold",
            "data.split.n_folds=3",
            f"data.split.fold={fold}",
        )
        dm.setup("fit")
        vals += dm.split.val
    assert sorted(vals) == sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())


def _first_batches(root: Path, cache: Path, seed: int, workers: int) -> list[torch.Tensor]:
    import lightning as L

    L.seed_everything(seed, workers=True)
    dm = tiny_datamodule(root, cache, f"seed={seed}", f"data.num_workers={workers}")
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [next(it)["image"] for _ in range(2)]


@pytest.mark.parametrize("workers", [0, 2])
def test_seeded_loading_is_reproducible(synthetic_root: Path, tmp_path: Path, workers: int) -> None:
    a = _first_batches(synthetic_root, tmp_path / "cache", 7, workers)
    b = _first_batches(synthetic_root, tmp_path / "cache", 7, workers)
    c = _first_batches(synthetic_root, tmp_path / "cache", 8, workers)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_cache_inside_data_root_is_refused(synthetic_root: Path) -> None:
    with pytest.raises(ConfigError, match="data.cache_dir=.* overlaps the input data.root="):
        tiny_datamodule(synthetic_root, synthetic_root / "cache")


@pytest.mark.parametrize("loader", ["workers", "device", "auto"])
def test_the_removed_loader_setting_is_named(
    synthetic_root: Path, tmp_path: Path, loader: str
) -> None:
    """A config from before the one data path (command line or YAML) gets one line, not a
    TypeError about an unexpected argument."""
    with pytest.raises(ConfigError, match=rf"^data.loader='{loader}': the setting is gone; "):
        tiny_datamodule(synthetic_root, tmp_path / "cache", f"data.loader={loader}")


def test_an_augmentation_preset_in_the_old_two_version_form_is_named() -> None:
    from brainseg.data.datamodule import check_augmentation

    with pytest.raises(
        ConfigError,
        match=r"data.augmentation must be an albumentations transform or Compose "
        r"\(conf/data/augmentation/\*.yaml\), got dict keys \['device', 'workers'\]",
    ):
        check_augmentation({"workers": {}, "device": {}})
    assert check_augmentation({}) is None  # the `none` preset
