"""Input data is never overwritten and never silently misread: predict's output/input
overlap, run directories inside data.root, all inputs checked before writing, duplicate or stray
slices, bad mask values, black volumes, mask names, data.split.n_val=0, 1-patient validation/test
sets."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import PROJECT, compose, compose_run, run_cli, snapshot, tiny_train_overrides

from brainseg.data.reader import find_patients, read_patient, scan_patient
from brainseg.data.splits import reference_split
from brainseg.errors import ConfigError, DataError
from brainseg.prediction.pipeline import predict


def _patient(root: Path, name: str = "TCGA_AA_0001_20000101", n: int = 6, size: int = 16) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for z in range(1, n + 1):
        tifffile.imwrite(
            folder / f"{name}_{z}.tif", np.full((size, size, 3), 40, np.uint8), photometric="rgb"
        )
        tifffile.imwrite(
            folder / f"{name}_{z}_mask.tif", np.full((size, size), 255 * (z % 2), np.uint8)
        )
    return folder


def test_two_files_for_one_slice_number_are_named(tmp_path: Path) -> None:
    folder = _patient(tmp_path)
    shutil.copy(folder / f"{folder.name}_5.tif", folder / f"{folder.name}_05.tif")
    with pytest.raises(
        DataError,
        match=rf"{folder.name}_0?5\.tif and {folder.name}_0?5\.tif: two files for slice 5",
    ):
        scan_patient(folder)  # before: directory order picked one of them


def test_a_slice_of_another_patient_is_named(tmp_path: Path) -> None:
    folder = _patient(tmp_path)
    other = "TCGA_BB_0002_20000102"
    (folder / f"{folder.name}_6.tif").rename(folder / f"{other}_6.tif")
    (folder / f"{folder.name}_6_mask.tif").rename(folder / f"{other}_6_mask.tif")
    with pytest.raises(
        DataError, match=rf"{other}_6(_mask)?\.tif: slice of patient {other}, not of {folder.name}"
    ):
        scan_patient(folder)  # before: paired silently with the folder's patient


def test_a_renamed_folder_is_one_patient(tmp_path: Path) -> None:
    folder = _patient(tmp_path)
    renamed = folder.rename(tmp_path / "renamed")
    assert scan_patient(renamed).numbers == tuple(range(1, 7))


def test_mask_values_other_than_binary_are_refused(tmp_path: Path) -> None:
    folder = _patient(tmp_path)
    bad = folder / f"{folder.name}_2_mask.tif"
    tifffile.imwrite(bad, np.array([[0, 1], [2, 1]], np.uint8).repeat(8, 0).repeat(8, 1))
    with pytest.raises(
        DataError, match=re.escape(f"{bad}: mask values [0, 1, 2]; expected {{0, 255}} or {{0, 1}}")
    ):
        read_patient(scan_patient(folder))  # before: read as all zero, the lesion erased


def test_black_volume_with_a_lesion_is_named_in_a_warning(tmp_path: Path, caplog) -> None:
    folder = _patient(tmp_path)
    for z in range(1, 7):
        tifffile.imwrite(
            folder / f"{folder.name}_{z}.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb"
        )
    with caplog.at_level(logging.WARNING, logger="brainseg"):
        read_patient(scan_patient(folder))
    assert f"patient {folder.name}" in caplog.text and "all black" in caplog.text  # before: no word


def test_n_val_zero_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match="data.split.n_val=0 leaves no validation patients.*trainer.limit_val_batches=0",
    ):
        reference_split(
            [f"p{i}" for i in range(5)], n_val=0
        )  # before: trained without validation, exit 0


def test_documented_predict_model_option_composes() -> None:
    manual = (PROJECT / "docs" / "prediction.md").read_text()
    option = re.search(
        r"- `([^`]*model\.encoder_name=)…` \(any model setting\) makes predict\.py", manual
    )[1]
    cfg = compose(
        [f"{option}resnet18"], hydra_node=False, config_name="predict"
    )  # before: Hydra refused the key
    assert cfg.model.encoder_name == "resnet18"


def _predict(*overrides: str) -> dict:
    return predict(
        compose(
            ["progress=false", "figures.overlays=false", *overrides],
            hydra_node=False,
            config_name="predict",
        )
    )


@pytest.mark.slow
def test_predict_refuses_an_output_that_contains_the_input(
    tiny_run: Path, copied_root: Path, tmp_path: Path
) -> None:
    ckpt = f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]"
    patient = find_patients(copied_root)[0].folder
    link = tmp_path / "link_to_root"
    link.symlink_to(copied_root)
    before = snapshot(copied_root)
    for output in (copied_root, link, link / patient.name / "preds"):
        with pytest.raises(
            ConfigError, match="overlaps the input"
        ):  # before: 22 of 24 masks replaced
            _predict(f"input={patient}", ckpt, f"output_dir={output}", "overwrite=true")
    assert snapshot(copied_root) == before


@pytest.mark.parametrize("threshold", ["2", "0", "'0.5'"])
def test_predict_refuses_a_threshold_outside_0_1(
    synthetic_root: Path, tmp_path: Path, threshold: str
) -> None:
    with pytest.raises(ConfigError) as raised:  # before: every mask empty (2), exit status 0
        _predict(
            f"input={synthetic_root}",
            f"checkpoints=[{tmp_path / 'absent.ckpt'}]",  # refused before any file is read
            f"output_dir={tmp_path / 'out'}",
            f"threshold={threshold}",
        )
    assert str(raised.value).startswith(f"threshold={threshold} must be a probability threshold")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_checks_every_input_before_writing(
    tiny_run: Path, copied_root: Path, tmp_path: Path
) -> None:
    last = find_patients(copied_root)[-1]
    last.images[2].write_bytes(b"not a tif")
    with pytest.raises(DataError, match=re.escape(f"{last.images[2]}: unreadable tif")):
        _predict(
            f"input={copied_root}",
            f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]",
            f"output_dir={tmp_path / 'out'}",
        )
    assert not (tmp_path / "out").exists()  # before: the first patients' masks were written


@pytest.mark.slow
def test_predicted_masks_are_named_after_the_image_files(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    patient = find_patients(synthetic_root)[0]
    renamed = tmp_path / "in" / "renamed"
    shutil.copytree(patient.folder, renamed)
    _predict(
        f"input={renamed}",
        f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]",
        f"output_dir={tmp_path / 'out'}",
    )
    written = sorted(p.name for p in (tmp_path / "out" / "renamed").iterdir())
    assert written == sorted(p.name for p in patient.masks)  # before: renamed_<n>_mask.tif


@pytest.mark.slow
def test_run_directory_inside_data_root_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    before = snapshot(synthetic_root)
    result = run_cli(
        "train.py",
        *tiny_train_overrides(synthetic_root, synthetic_root / "run", tmp_path / "cache"),
        cwd=PROJECT,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert (
        result.returncode == 2
        and last.startswith("error: hydra.run.dir=")
        and "overlaps the input data.root=" in last
    )
    assert (
        snapshot(synthetic_root) == before
    )  # before: .hydra/, checkpoints and logs under the data root
    from brainseg.training.pipeline import train

    with pytest.raises(ConfigError, match="paths.output_dir=.* overlaps the input data.root="):
        train(compose_run(synthetic_root, synthetic_root / "run", tmp_path / "cache"))
    assert snapshot(synthetic_root) == before


@pytest.mark.slow
def test_one_patient_validation_and_test_sets(synthetic_root: Path, tmp_path: Path) -> None:
    from brainseg.training.pipeline import train

    test_patient = find_patients(synthetic_root)[0].name
    metrics = train(
        compose_run(
            synthetic_root,
            tmp_path / "run",
            tmp_path / "cache",
            "data.split.n_val=1",
            "trainer.max_epochs=1",
            "test=true",
            f"data.split.test_patients=[{test_patient}]",
        )
    )
    # before: TypeError: 'int' object is not iterable (one-element scores squeezed to 0-d tensors)
    assert len(metrics.best.per_patient) == 1 and list(metrics.test.per_patient) == [test_patient]


def _symlink_loop(folder: Path) -> Path:
    """`folder/loop` -> `folder/back` -> `folder/loop`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loop").symlink_to(folder / "back")
    (folder / "back").symlink_to(folder / "loop")
    return folder / "loop"


def test_a_symlink_loop_is_named_in_one_line(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    from brainseg.evaluate import main as evaluate
    from brainseg.prediction.pipeline import run_prediction
    from brainseg.training.pipeline import train

    loop = _symlink_loop(tmp_path / "links")

    def refused(setting: str) -> str:
        return f"{setting}={str(loop)!r}: cannot resolve the path (symlink loop)"

    # before: a bare RuntimeError("Symlink loop from ...") in each case
    with pytest.raises(ConfigError) as raised:
        train(compose_run(loop, tmp_path / "run", tmp_path / "cache"))
    assert str(raised.value) == refused("data.root")
    for setting, other in (("input", f"output_dir={tmp_path / 'out'}"), ("output_dir", None)):
        overrides = [f"{setting}={loop}", other or f"input={synthetic_root}", "progress=false"]
        cfg = compose(overrides, hydra_node=False, config_name="predict")
        with pytest.raises(ConfigError) as raised:
            run_prediction(cfg, [])
        assert str(raised.value) == refused(setting)
    assert evaluate([str(loop), str(synthetic_root), "--output", str(tmp_path / "eval")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {refused('pred_dir')}"


def test_a_sweep_directory_inside_data_root_is_refused_before_anything_is_written(
    copied_root: Path,
) -> None:
    from brainseg.hydra_callbacks import SweepGuard

    before = snapshot(copied_root)
    config = compose([f"data.root={copied_root}", f"hydra.sweep.dir={copied_root}/sweep"])
    with pytest.raises(SystemExit) as stopped:
        SweepGuard().on_multirun_start(config)
    assert stopped.value.code == 2
    assert snapshot(copied_root) == before  # before: the sweep's lock folder under the data root
