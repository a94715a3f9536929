"""The real LGG patients in ../shared/data/lgg: reading, preprocessing statistics,
a short training run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import PROJECT, REAL_LGG, compose, requires_real_data, snapshot

from brainseg.data.cache import VolumeCache
from brainseg.data.preprocess import PreprocessConfig
from brainseg.data.reader import find_patients, read_patient
from brainseg.runfiles import read_metrics, read_split

pytestmark = [requires_real_data, pytest.mark.realdata]


@pytest.fixture(scope="module")
def patients():
    return find_patients(REAL_LGG)


def test_all_patients_read_with_binary_masks(patients) -> None:
    assert len(patients) == 20
    total = 0
    for files in patients:
        on_disk = sorted(p.name for p in files.folder.glob("*.tif"))
        assert len(on_disk) == 2 * len(files.numbers)
        volume = read_patient(files)
        assert (
            volume.image.shape == (len(on_disk) // 2, 256, 256, 3)
            and volume.image.dtype == np.uint8
        )
        assert volume.mask.shape == volume.image.shape[:3] and set(np.unique(volume.mask)) <= {0, 1}
        total += len(files.numbers)
    assert total == 646


def test_reference_preprocessing_shapes_and_statistics(patients, tmp_path: Path) -> None:
    cache = VolumeCache(tmp_path, PreprocessConfig())
    for files in patients[:5]:
        volume = cache.load(files)
        image = np.stack([volume.slice_image(z) for z in range(len(volume.image))])
        assert image.shape == (len(volume.numbers), 256, 256, 3) and image.dtype == np.float32
        assert len(volume.numbers) <= len(files.numbers) - 2  # first and last slice dropped
        assert volume.numbers[0] >= 2 and volume.numbers[-1] <= files.numbers[-1] - 1
        assert image.min() >= 0 and image.max() <= 1 and set(np.unique(volume.mask)) <= {0, 1}
        z = (image.astype(np.float64) - volume.channel_mean) / volume.channel_std
        np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=2e-3)
        np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=2e-3)
        raw = read_patient(files)
        kept = raw.mask[volume.geometry.slice_indices].sum()
        assert kept == raw.mask[1:-1].sum()  # the brain crop never cuts lesion voxels away


@pytest.mark.slow
def test_short_real_training_run(tmp_path: Path) -> None:
    from brainseg.prediction.pipeline import predict
    from brainseg.training.pipeline import train

    before = snapshot(REAL_LGG)
    run = tmp_path / "run"
    train(  # train.py's task, in this process
        compose(
            [
                f"data.root={REAL_LGG}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"paths.root_dir={PROJECT}",
                f"paths.output_dir={run}",
                "data.preprocess.image_size=64",
                "data.split.n_val=4",
                "data.batch_size=16",
                "data.num_workers=2",
                "model.encoder_name=resnet18",
                "optimizer.lr=1e-3",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=8",
                "trainer.accelerator=cpu",
            ],
            hydra_node=False,
        )
    )
    assert snapshot(REAL_LGG) == before
    best, split = read_metrics(run).best, read_split(run)
    assert sorted(best.per_patient) == sorted(split.val) and len(split.val) == 4
    assert best.dsc_volume_mean == pytest.approx(float(np.mean(list(best.per_patient.values()))))
    print(
        "\nreal data, 8 steps at 64 px: "
        f"val mean per-volume DSC {best.dsc_volume_mean:.3f} on 4 patients"
    )

    # predict.py with that model on all 20 patients: original geometry, scores recomputed from the
    # files
    out = tmp_path / "predicted"
    predict(
        compose(
            [
                f"input={REAL_LGG}",
                f"checkpoints=[{run}/checkpoints/last.ckpt]",
                f"output_dir={out}",
                "figures.overlays=false",
                "progress=false",
            ],
            hydra_node=False,
            config_name="predict",
        )
    )
    assert snapshot(REAL_LGG) == before
    with open(out / "dsc.csv") as fh:
        rows = {r["patient"]: float(r["dsc"]) for r in csv.DictReader(fh)}
    assert len(rows) == 20
    for files in find_patients(REAL_LGG):
        pred = np.stack([tifffile.imread(out / files.name / m.name) for m in files.masks])
        truth = np.stack([tifffile.imread(m) for m in files.masks]) > 0
        assert pred.dtype == np.uint8 and pred.shape == truth.shape
        expected = (
            1.0
            if pred.sum() + truth.sum() == 0
            else 2 * ((pred > 0) & truth).sum() / ((pred > 0).sum() + truth.sum())
        )
        assert rows[files.name] == pytest.approx(expected, abs=1e-6)
