"""Per-volume metrics on hand-computable shapes, their empty-volume conventions,
paired statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainseg.evaluation.statistics import (
    BETTER,
    SAME,
    WORSE,
    compare_configurations,
    holm,
    minimum_patients,
    too_few_patients,
)
from brainseg.metrics.functional import lesion_detection, volume_metrics


def _cube(shape: tuple[int, int, int], corner: tuple[int, int, int], side: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + side) for c in corner)] = True
    return mask


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("axis", [0, 2])
def test_hd95_of_two_cubes_offset_by_k_pixels_is_k(k: int, axis: int) -> None:
    truth = _cube((40, 48, 48), (10, 10, 10), 12)
    pred = np.roll(truth, k, axis=axis)
    assert volume_metrics(pred, truth)["hd95"] == pytest.approx(k)


@pytest.mark.parametrize("k", [1, 4])
def test_sheets_k_apart_have_assd_k_and_surface_dice_by_tolerance(k: int) -> None:
    truth = np.zeros((6, 20, 20), bool)
    truth[:, :, 5] = True
    pred = np.roll(truth, k, axis=2)
    assert volume_metrics(pred, truth)["assd"] == pytest.approx(k)
    assert volume_metrics(pred, truth, tolerance=k)["nsd"] == 1.0
    assert volume_metrics(pred, truth, tolerance=k - 0.5)["nsd"] == 0.0


def test_a_perfect_prediction_scores_perfectly() -> None:
    truth = _cube((8, 30, 30), (2, 5, 5), 4)
    scores = volume_metrics(truth, truth)
    assert scores["dsc"] == 1 and scores["hd95"] == 0 and scores["assd"] == 0 and scores["nsd"] == 1
    assert (
        scores["volume_difference"] == 0
        and scores["lesion_recall"] == 1
        and scores["lesion_precision"] == 1
    )


EMPTY = np.zeros((5, 16, 16), bool)
LESION = _cube((5, 16, 16), (1, 2, 2), 3)
DIAGONAL = math.sqrt(4**2 + 15**2 + 15**2)


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        (
            EMPTY,
            EMPTY,
            {
                "dsc": 1,
                "hd95": 0,
                "assd": 0,
                "nsd": 1,
                "volume_difference": 0,
                "lesion_recall": 1,
                "lesion_precision": 1,
            },
        ),
        (
            LESION,
            EMPTY,
            {
                "dsc": 0,
                "hd95": DIAGONAL,
                "assd": DIAGONAL,
                "nsd": 0,
                "volume_difference": 27,
                "lesion_recall": 0,
                "lesion_precision": 0,
            },
        ),
        (
            EMPTY,
            LESION,
            {
                "dsc": 0,
                "hd95": DIAGONAL,
                "assd": DIAGONAL,
                "nsd": 0,
                "volume_difference": 27,
                "lesion_recall": 0,
                "lesion_precision": 0,
            },
        ),
    ],
    ids=["both empty", "truth empty", "prediction empty"],
)
def test_empty_volume_conventions(
    pred: np.ndarray, truth: np.ndarray, expected: dict[str, float]
) -> None:
    scores = volume_metrics(pred, truth)
    assert {k: scores[k] for k in expected} == pytest.approx(expected)


def test_lesion_detection_counts_found_and_false_components() -> None:
    truth = _cube((10, 40, 40), (1, 1, 1), 4) | _cube((10, 40, 40), (1, 30, 30), 4)
    pred = _cube((10, 40, 40), (2, 2, 2), 4) | _cube(
        (10, 40, 40), (1, 15, 15), 3
    )  # one hit, one false alarm
    assert lesion_detection(pred, truth) == {
        "lesions_true": 2,
        "lesions_predicted": 2,
        "lesions_found": 1,
        "lesions_hit": 1,
        "lesion_recall": 0.5,
        "lesion_precision": 0.5,
    }


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        volume_metrics(EMPTY, EMPTY[:, :8])


def _patients(values: np.ndarray) -> dict[str, float]:
    return {f"p{i}": float(v) for i, v in enumerate(values)}


def test_identical_configurations_are_not_distinguishable() -> None:
    scores = np.random.default_rng(0).uniform(0.4, 0.9, 10)
    rows = compare_configurations({"a": _patients(scores), "b": _patients(scores)})
    compared = next(r for r in rows if not r["reference"])
    assert compared["difference"] == 0 and compared["p"] == 1 and compared["verdict"] == SAME


@pytest.mark.parametrize("n", [8, 12])
def test_better_on_every_patient_by_a_margin_is_better(n: int) -> None:
    base = np.random.default_rng(n).uniform(0.3, 0.8, n)
    rows = compare_configurations(
        {"base": _patients(base), "new": _patients(base + 0.05)}, reference="base"
    )
    new = next(r for r in rows if r["configuration"] == "new")
    assert new["verdict"] == BETTER and new["p_holm"] < 0.05
    assert new["difference"] == pytest.approx(0.05) and new["difference_ci_low"] == pytest.approx(
        0.05
    )
    assert rows[0]["configuration"] == "new"  # best mean first


def test_against_the_best_by_default_a_worse_configuration_is_worse_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    best = rng.uniform(0.5, 0.9, 10)
    noisy = best + rng.normal(0, 0.05, 10) - 0.005
    rows = compare_configurations(
        {"best": _patients(best), "worse": _patients(best - 0.1), "noisy": _patients(noisy)}
    )
    verdicts = {r["configuration"]: r["verdict"] for r in rows}
    assert verdicts == {"best": "reference", "worse": WORSE, "noisy": SAME}
    ci = next(r for r in rows if r["configuration"] == "best")
    assert ci["ci_low"] < ci["mean"] < ci["ci_high"]


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def _write_masks(root, patient: str, masks: np.ndarray) -> None:
    import tifffile

    (root / patient).mkdir(parents=True, exist_ok=True)
    for n, mask in enumerate(masks, start=1):
        tifffile.imwrite(root / patient / f"{patient}_{n}_mask.tif", mask.astype(np.uint8) * 255)


def test_evaluate_scores_a_folder_and_refuses_mismatches_in_one_line(tmp_path, capsys) -> None:
    import json

    from brainseg.evaluate import main as evaluate

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    lesion = _cube((4, 24, 24), (1, 4, 4), 6)
    for name, offset in (("A", 0), ("B", 2)):
        _write_masks(truth, name, lesion)
        _write_masks(pred, name, np.roll(lesion, offset, axis=2))
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "dsc_summary.json").read_text())
    assert (
        summary["hd95"]["mean"] == pytest.approx(1.0) and summary["dsc"]["n"] == 2
    )  # HD95 0 (A) and 2 (B)

    (pred / "B" / "B_4_mask.tif").unlink()
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out2")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {pred / 'B' / 'B_4_mask.tif'}: slice 4 is missing"
    )
    _write_masks(pred, "B", np.zeros((4, 24, 20), bool))
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out2")]) == 2
    line = capsys.readouterr().err.strip()
    assert (
        line.startswith(f"error: {pred / 'B' / 'B_1_mask.tif'}: expected an 24x24 uint8 mask")
        and "\n" not in line
    )
    _write_masks(pred, "C", lesion)
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out2")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {pred / 'C'}: patient C has no truth masks in {truth}"
    )
    assert not (tmp_path / "out2").exists()


def test_evaluate_takes_a_step_list_with_arguments(tmp_path, capsys) -> None:
    import json

    from brainseg.evaluate import main as evaluate

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    lesion = _cube((4, 24, 24), (1, 4, 4), 6)
    speck = lesion.copy()
    speck[0, 20, 20] = True  # a false component of one voxel
    _write_masks(truth, "A", lesion)
    _write_masks(pred, "A", speck)
    arguments = [str(pred), str(truth), "--output", str(tmp_path / "out"), "--postprocessing"]
    # before: always refused (argparse's choices take step names, never their arguments)
    assert evaluate([*arguments, "[{name: remove_small_components, min_voxels: 10}]"]) == 0
    summary = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert summary["postprocessing"] == [{"name": "remove_small_components", "min_voxels": 10}]
    assert summary["scores"]["dsc"]["mean"] == 1.0  # the speck is gone
    for steps, message in (
        ("[remove_small_components]", "--postprocessing[0] (remove_small_components): missing"),
        ("[{name: lcc}]", "--postprocessing[0]: unknown step 'lcc'"),
        ("[{name: largest_component", "--postprocessing: not YAML/JSON"),
        ("largest_component", "--postprocessing='largest_component' must be a step list"),
    ):
        assert evaluate([*arguments, steps, "--overwrite"]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"error: {message}") and "\n" not in line


def test_evaluate_reads_masks_as_training_and_predict_do(tmp_path, capsys) -> None:
    from brainseg.evaluate import main as evaluate

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    lesion = _cube((4, 24, 24), (1, 4, 4), 6)
    for name in ("A", "B"):
        _write_masks(truth, name, lesion)
        _write_masks(pred, name, lesion)
    # predict.py names masks after the images: a folder renamed by the user keeps its old prefix
    for folder in (truth, pred):
        (folder / "B").rename(folder / "B_renamed")
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "dsc.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["A", "B_renamed"]  # before: B_renamed dropped

    (pred / "A" / "A_2_mask.tif").rename(pred / "A" / "A_02_mask.tif")
    _write_masks(pred, "A", lesion)  # A_2_mask.tif again: two files for slice 2
    assert evaluate([str(pred), str(truth), "--output", str(tmp_path / "out2")]) == 2
    line = capsys.readouterr().err.strip()  # before: one of the two silently scored
    assert line == f"error: {pred / 'A' / 'A_02_mask.tif'} and A_2_mask.tif: two files for slice 2"


@pytest.mark.parametrize("source", ["run directory", "split.json", "patient list"])
def test_evaluate_headlines_the_held_out_patients_of_a_split(tmp_path, capsys, source) -> None:
    import csv
    import json

    from brainseg.evaluate import main as evaluate

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    lesion = _cube((4, 24, 24), (1, 4, 4), 6)
    for name, offset in (("A", 0), ("B", 2), ("C", 4)):
        _write_masks(truth, name, lesion)
        _write_masks(pred, name, np.roll(lesion, offset, axis=2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"train": ["A"], "val": ["B", "C"], "test": []}))
    (tmp_path / "held_out.txt").write_text("# held out\nB\nC\n")
    split = {
        "run directory": run,
        "split.json": run / "split.json",
        "patient list": tmp_path / "held_out.txt",
    }[source]
    out = tmp_path / "out"
    assert evaluate([str(pred), str(truth), "--output", str(out), "--split", str(split)]) == 0
    with open(out / "dsc.csv") as fh:
        rows = {r["patient"]: r for r in csv.DictReader(fh)}
    expected = {"A": "train", "B": "test" if source == "patient list" else "val"}
    assert {k: rows[k]["subset"] for k in "AB"} == expected
    held_out = [float(rows[k]["dsc"]) for k in "BC"]
    summary = json.loads((out / "dsc_summary.json").read_text())
    assert summary["n_held_out"] == 2 and summary["dsc"]["mean"] == pytest.approx(np.mean(held_out))
    printed = capsys.readouterr().out
    assert f"per-volume DSC over 2 held-out patients: mean {np.mean(held_out):.4f}" in printed
    assert "1 training patient(s) left out" in printed


def test_evaluate_refuses_an_unreadable_split_in_one_line(tmp_path, capsys) -> None:
    from brainseg.evaluate import main as evaluate

    truth = tmp_path / "truth"
    _write_masks(truth, "A", _cube((4, 24, 24), (1, 4, 4), 6))
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "list.txt").write_text("Z\n")
    for split, expected in (
        (tmp_path / "bad.json", "not a split file"),
        (tmp_path / "list.txt", "patient Z has no masks to score"),
        (tmp_path / "missing", "split not found"),
    ):
        args = [str(truth), str(truth), "--output", str(tmp_path / "out"), "--split", str(split)]
        assert evaluate(args) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"error: {split}") and expected in line and "\n" not in line


def test_surface_metrics_match_monai_metric_functions() -> None:
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    rng = np.random.default_rng(3)
    truth = np.zeros((12, 40, 40), bool)
    truth[2:9, 8:25, 10:30] = True
    pred = np.roll(truth, (1, 3, -2), axis=(0, 1, 2)) | (rng.random(truth.shape) > 0.995)
    y_pred, y = (torch.from_numpy(m.astype(np.float32))[None, None] for m in (pred, truth))
    scores = volume_metrics(pred, truth, tolerance=1.5)
    assert scores["hd95"] == pytest.approx(
        compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95).item(),
        rel=1e-5,
    )
    assert scores["assd"] == pytest.approx(
        compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True).item(),
        rel=1e-5,
    )
    assert scores["nsd"] == pytest.approx(
        compute_surface_dice(y_pred, y, [1.5], include_background=True).item(), rel=1e-5
    )


@pytest.mark.parametrize("n", [2, 5])
def test_too_few_patients_get_no_interval_no_p_and_say_so(n: int) -> None:
    base = np.linspace(0.4, 0.6, n)
    rows = compare_configurations({"a": _patients(base + 0.2), "b": _patients(base)})
    best, other = rows
    assert other["verdict"] == too_few_patients() and other["n_paired"] == n
    assert other["difference"] == pytest.approx(-0.2)  # the plain mean difference stays
    nothing = (None, None, None, None)
    assert (
        other["difference_ci_low"],
        other["difference_ci_high"],
        other["p"],
        other["p_holm"],
    ) == (nothing)  # before: a BCa interval excluding 0 beside "not distinguishable"
    assert (best["ci_low"], best["ci_high"]) == (None, None)


def test_six_patients_are_enough_for_a_wilcoxon_verdict() -> None:
    assert minimum_patients() == 6 and minimum_patients(0.01) == 8
    base = np.linspace(0.4, 0.6, 6)
    rows = compare_configurations({"a": _patients(base + 0.2), "b": _patients(base)})
    assert rows[1]["verdict"] == WORSE and rows[1]["p"] == pytest.approx(2 / 2**6)
