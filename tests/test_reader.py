"""kaggle_3m reading: slice order, pairing, and one-line errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg.data.reader import find_patients, read_patient, scan_patient
from brainseg.errors import DataError


def _patient(root: Path, name: str = "TCGA_AA_0001_20000101", n: int = 12, size: int = 16) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for z in range(1, n + 1):
        tifffile.imwrite(
            folder / f"{name}_{z}.tif", np.full((size, size, 3), z, np.uint8), photometric="rgb"
        )
        tifffile.imwrite(
            folder / f"{name}_{z}_mask.tif", np.full((size, size), 255 * (z % 2), np.uint8)
        )
    return folder


def test_slices_in_numeric_order(tmp_path: Path) -> None:
    folder = _patient(tmp_path, n=12)
    files = scan_patient(folder)
    assert files.numbers == tuple(range(1, 13))
    assert [p.name for p in files.images[:3]] == [f"{folder.name}_{i}.tif" for i in (1, 2, 3)]
    volume = read_patient(files)
    assert volume.image.shape == (12, 16, 16, 3) and volume.image.dtype == np.uint8
    assert volume.image[:, 0, 0, 0].tolist() == list(range(1, 13))  # 2 before 10
    assert volume.mask.dtype == np.uint8 and set(np.unique(volume.mask)) == {0, 1}
    assert volume.mask[:, 0, 0].tolist() == [z % 2 for z in range(1, 13)]


def test_root_listing_and_single_patient_folder(tmp_path: Path) -> None:
    _patient(tmp_path, "TCGA_BB_0002_20000101", n=3)
    _patient(tmp_path, "TCGA_AA_0001_20000101", n=3)
    (tmp_path / "README.md").write_text("not a patient")
    (tmp_path / "empty_folder").mkdir()
    assert [p.name for p in find_patients(tmp_path)] == [
        "TCGA_AA_0001_20000101",
        "TCGA_BB_0002_20000101",
    ]
    assert [p.name for p in find_patients(tmp_path / "TCGA_BB_0002_20000101")] == [
        "TCGA_BB_0002_20000101"
    ]


def test_inference_folder_without_masks(tmp_path: Path) -> None:
    folder = _patient(tmp_path, n=3)
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    files = scan_patient(folder, require_masks=False)
    assert files.masks is None and read_patient(files).mask is None
    with pytest.raises(DataError, match="image has no mask"):
        scan_patient(folder, require_masks=True)


def _error(tmp_path: Path, damage) -> str:
    folder = _patient(tmp_path, n=4)
    damage(folder)
    with pytest.raises(DataError) as info:
        for files in find_patients(tmp_path):
            read_patient(files)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / f"{f.name}_2_mask.tif").unlink(), "_2.tif: image has no mask"),
        (lambda f: (f / f"{f.name}_3.tif").unlink(), "_3_mask.tif: mask has no image"),
        (
            lambda f: (f / f"{f.name}_2.tif").write_bytes(b"not a tiff at all"),
            "_2.tif: unreadable tif",
        ),
        (
            lambda f: tifffile.imwrite(f / f"{f.name}_2.tif", np.zeros((16, 16), np.uint8)),
            "_2.tif: expected an HxWx3 uint8",
        ),
        (
            lambda f: tifffile.imwrite(f / f"{f.name}_2.tif", np.zeros((16, 16, 3), np.float32)),
            "_2.tif: expected an HxWx3 uint8",
        ),
        (
            lambda f: tifffile.imwrite(
                f / f"{f.name}_3.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb"
            ),
            "_3.tif: slice is (8, 8)",
        ),
        (
            lambda f: tifffile.imwrite(f / f"{f.name}_2_mask.tif", np.zeros((8, 8), np.uint8)),
            "_2_mask.tif: expected an 16x16 uint8 mask",
        ),
        (
            lambda f: tifffile.imwrite(f / f"{f.name}_2_mask.tif", np.zeros((16, 16), np.float32)),
            "_2_mask.tif: expected an 16x16 uint8 mask",
        ),
        (
            lambda f: [(f / f"{f.name}_2{s}.tif").unlink() for s in ("", "_mask")],
            "slice 2 is missing",
        ),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, damage, expected: str) -> None:
    assert expected in _error(tmp_path, damage)


def test_missing_root_and_no_patients(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data root does not exist"):
        find_patients(tmp_path / "nope")
    (tmp_path / "some_folder").mkdir()
    with pytest.raises(DataError, match="no patient folders"):
        find_patients(tmp_path)


def test_synthetic_generator_never_overwrites(tmp_path: Path) -> None:
    from brainseg.data.synthetic import generate, main

    names = generate(tmp_path / "syn", n_patients=2, seed=3, size=32, slices=(8, 8))
    again = generate(
        tmp_path / "syn", n_patients=2, seed=3, size=32, slices=(8, 8)
    )  # identical: left as it is
    assert names == again and len(find_patients(tmp_path / "syn")) == 2
    for p in find_patients(tmp_path / "syn"):
        volume = read_patient(p)
        assert volume.mask[:3].sum() == 0 and volume.mask[-3:].sum() == 0 and volume.mask.sum() > 0
    with pytest.raises(DataError, match="not an identical synthetic dataset"):
        generate(tmp_path / "syn", n_patients=3, seed=3, size=32, slices=(8, 8))
    (tmp_path / "file.txt").write_text("mine")
    assert main(["--out", str(tmp_path / "file.txt")]) == 2
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_a_slice_file_beside_patient_folders_is_refused(tmp_path: Path) -> None:
    _patient(tmp_path, "TCGA_AA_0001_20000101", n=3)
    _patient(tmp_path, "TCGA_BB_0002_20000101", n=3)
    stray = tmp_path / "TCGA_AA_0001_20000101_5.tif"
    stray.write_bytes(
        (tmp_path / "TCGA_AA_0001_20000101" / stray.name.replace("_5", "_1")).read_bytes()
    )
    with pytest.raises(DataError) as info:  # before: the root was read as one patient, no word
        find_patients(tmp_path, require_masks=False)  # as predict.py reads its input
    assert str(info.value).startswith(f"{stray}: a slice file beside the patient folders")


def test_tiff_and_upper_case_slices_are_read_like_tif(tmp_path: Path) -> None:
    folder = _patient(tmp_path, n=4)
    for name, suffix in [
        ("_1", ".tiff"),
        ("_1_mask", ".TIF"),
        ("_2", ".TIFF"),
        ("_2_mask", ".Tif"),
    ]:
        (folder / f"{folder.name}{name}.tif").rename(folder / f"{folder.name}{name}{suffix}")
    (files,) = find_patients(tmp_path)  # before: those slices were skipped, a gap was refused
    assert files.numbers == (1, 2, 3, 4) and {p.suffix for p in files.images} > {".tif"}
    assert read_patient(files).image[:, 0, 0, 0].tolist() == [1, 2, 3, 4]
    (folder / f"{folder.name}_4.tif").unlink()
    with pytest.raises(DataError, match=f"{folder.name}_4_mask.tif: mask has no image"):
        scan_patient(folder)


def test_a_copied_patient_folder_is_refused_naming_both(tmp_path: Path) -> None:
    import shutil

    original = _patient(tmp_path, n=3)
    copy = tmp_path / f"{original.name} (copy)"
    shutil.copytree(original, copy)
    with pytest.raises(DataError) as info:  # before: a second patient, a leak across the split
        find_patients(tmp_path)
    assert str(info.value).startswith(f"{original} and {copy}: two folders of patient")


def test_a_renamed_folder_is_its_files_patient_with_one_warning(tmp_path: Path, caplog) -> None:
    original = _patient(tmp_path, n=3)
    renamed = original.rename(tmp_path / "renamed")
    (files,) = find_patients(tmp_path)
    assert files.name == original.name and files.folder == renamed  # before: "renamed"
    assert [r.getMessage() for r in caplog.records] == [
        f"{renamed}: its files name patient {original.name}, who it is taken for"
    ]
