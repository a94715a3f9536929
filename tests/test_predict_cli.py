"""End-to-end `python predict.py`: masks in the original geometry, scores that match an independent
recomputation, pictures read back, auto LCC, ensembles, ONNX, and one-line errors."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from helpers import PROJECT, compose, run_cli, snapshot

from brainseg.checkpoint import read_checkpoint, save_atomically
from brainseg.cli import run_task
from brainseg.data.reader import find_patients
from brainseg.prediction.members import load_checkpoint
from brainseg.prediction.pipeline import predict
from brainseg.runfiles import read_metrics, write_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predicted(
    tiny_run: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("predict") / "out"
    before = snapshot(synthetic_root)
    result = run_cli(
        "predict.py",
        f"input={synthetic_root}",
        f"checkpoints={tiny_run}/checkpoints/last.ckpt",  # one path needs no brackets
        f"output_dir={out}",
        "tta.hflip=true",
        "probability_maps=true",
        "progress=false",
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr  # before: tqdm bars in a redirected log
    assert snapshot(synthetic_root) == before
    log = result.stdout + result.stderr
    assert (
        "per-volume DSC over 2 held-out patients" in log and "4 training patient(s) left out" in log
    )
    assert "4 scored patient(s) were seen in training" in log
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if a.sum() + b.sum() == 0 else 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_masks_are_in_the_original_geometry(predicted: Path, synthetic_root: Path) -> None:
    for files in find_patients(synthetic_root):
        written = sorted((predicted / files.name).glob("*_mask.tif"))
        assert {p.name for p in written} == {p.name for p in files.masks}
        for path in written:
            mask = tifffile.imread(path)
            source = tifffile.imread(files.folder / path.name.replace("_mask.tif", ".tif"))
            assert (
                mask.dtype == np.uint8
                and mask.shape == source.shape[:2]
                and set(np.unique(mask)) <= {0, 255}
            )


def test_dsc_csv_matches_an_independent_recomputation(
    predicted: Path, synthetic_root: Path
) -> None:
    with open(predicted / "dsc.csv") as fh:
        rows = {r["patient"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 6
    for files in find_patients(synthetic_root):
        pred = np.stack([tifffile.imread(predicted / files.name / p.name) > 0 for p in files.masks])
        truth = np.stack([tifffile.imread(p) > 0 for p in files.masks])
        row = rows[files.name]
        assert float(row["dsc"]) == pytest.approx(_dice(pred, truth), abs=1e-6)
        assert (
            int(row["lesion_voxels"]) == truth.sum() and int(row["predicted_voxels"]) == pred.sum()
        )
    summary = json.loads((predicted / "dsc_summary.json").read_text())
    values = [float(r["dsc"]) for r in rows.values()]
    assert summary["by_subset"]["all"]["dsc"]["mean"] == pytest.approx(np.mean(values), abs=1e-5)
    assert summary["by_subset"]["all"]["dsc"]["std"] == pytest.approx(np.std(values), abs=1e-5)
    held_out = [float(r["dsc"]) for r in rows.values() if r["subset"] == "val"]
    assert summary["n_held_out"] == len(held_out) == 2
    assert summary["dsc"]["mean"] == pytest.approx(np.mean(held_out), abs=1e-5)
    assert summary["dsc"]["median"] == pytest.approx(np.median(held_out), abs=1e-5)


def test_subset_column_follows_the_checkpoint_split(predicted: Path, tiny_run: Path) -> None:
    split = json.loads((tiny_run / "split.json").read_text())
    with open(predicted / "dsc.csv") as fh:
        subsets = {r["patient"]: r["subset"] for r in csv.DictReader(fh)}
    assert subsets == {**{n: "train" for n in split["train"]}, **{n: "val" for n in split["val"]}}


def _has_colour(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return bool((np.abs(image[..., :3].astype(int) - rgb).max(axis=-1) < tol).any())


def test_figures_read_back(predicted: Path, synthetic_root: Path) -> None:
    chart = iio.imread(predicted / "dsc.png")
    assert chart.shape[0] > 200 and chart.shape[1] > 400 and chart[..., :3].std() > 10
    assert _has_colour(chart, (214, 39, 40)) and _has_colour(
        chart, (44, 160, 44)
    )  # mean and median lines
    overlays = sorted((predicted / "overlays").glob("*/*.png"))
    assert overlays
    images = [iio.imread(p) for p in overlays]
    assert all(i.shape == (64, 64, 3) for i in images)
    assert any(_has_colour(i, (0, 255, 0), 1) for i in images)  # truth outline
    gifs = sorted((predicted / "overlays").glob("*.gif"))
    patients = find_patients(synthetic_root)
    assert len(gifs) == len(patients)
    assert iio.imread(gifs[0], index=None).shape[0] == len(patients[0].numbers)


def test_the_steps_decided_after_training_are_applied(predicted: Path, tiny_run: Path) -> None:
    decision = json.loads((tiny_run / "postprocessing.json").read_text())
    assert decision["patients"] == sorted(json.loads((tiny_run / "split.json").read_text())["val"])
    summary = json.loads((predicted / "prediction.json").read_text())
    applied = summary["postprocessing"]
    assert applied["postprocessing"] == decision["postprocessing"] and len(summary["tta"]) == 2
    assert applied["source"] == f"decided after training ({tiny_run / 'postprocessing.json'})"
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == [
        *sorted(p.name for p in (tiny_run / "checkpoints").glob("best-*.ckpt")),
        "last.ckpt",
    ]  # nothing written next to the checkpoint


def test_reported_validation_scores_are_predicts_without_the_training_data(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """A machine with the checkpoint only: the data root it records is gone, the model folder is
    left untouched, and predict.py scores the run's validation patients exactly as the run
    reported them."""
    selected = read_metrics(tiny_run).selected
    checkpoint = read_checkpoint(selected.checkpoint)
    checkpoint["brainseg"]["data_root"] = str(tmp_path / "moved-away")
    model = tmp_path / "model" / "last.ckpt"
    save_atomically(checkpoint, model)
    inputs = tmp_path / "input"
    for name in selected.scores.per_patient:
        shutil.copytree(synthetic_root / name, inputs / name)
    before = snapshot(model.parent)
    _predict_inprocess(
        f"input={inputs}",
        f"checkpoints=[{model}]",
        f"output_dir={tmp_path / 'out'}",
        "figures.overlays=false",
    )
    assert snapshot(model.parent) == before
    with open(tmp_path / "out" / "dsc.csv") as fh:
        rows = {r["patient"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(selected.scores.per_patient_metrics)
    for name, reported in selected.scores.per_patient_metrics.items():
        for metric, value in reported.items():
            assert float(rows[name][metric]) == pytest.approx(value, abs=1e-6), (name, metric)


def test_refuses_to_overwrite_or_write_into_the_input(
    predicted: Path, tiny_run: Path, synthetic_root: Path
) -> None:
    ckpt = f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]"
    before = sorted((PROJECT / "outputs").rglob("*"))
    for output, message in (
        (predicted, "is not empty; choose another folder or set overwrite=true"),
        (synthetic_root / "preds", "overlaps the input"),
    ):
        result = run_cli(
            "predict.py", f"input={synthetic_root}", ckpt, f"output_dir={output}", cwd=PROJECT
        )
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert last.startswith("error: output_dir=") and message in last
    assert not (synthetic_root / "preds").exists()
    assert sorted((PROJECT / "outputs").rglob("*")) == before  # before: outputs/predict/runs/<time>


def _predict_inprocess(*overrides: str) -> dict:
    return predict(
        compose(
            ["progress=false", *overrides],
            hydra_node=False,
            config_name="predict",
        )
    )


def test_pure_inference_on_a_folder_without_masks(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    patient = find_patients(synthetic_root)[0]
    folder = tmp_path / "in" / patient.name
    folder.mkdir(parents=True)
    for image in patient.images:
        shutil.copy(image, folder)
    summary = _predict_inprocess(
        f"input={folder}",
        f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]",
        f"output_dir={tmp_path / 'out'}",
    )
    assert summary["patients"] == 1 and "dsc" not in summary
    assert len(list((tmp_path / "out" / patient.name).glob("*_mask.tif"))) == len(patient.numbers)
    assert (
        not (tmp_path / "out" / "dsc.csv").exists()
        and (tmp_path / "out" / "overlays" / f"{patient.name}.gif").exists()
    )


def _moved_sweep(ckpt: Path, sweep: Path) -> dict[str, str]:
    """Two finished jobs of a sweep moved after training, whose selection rules chose last.ckpt
    and the best checkpoint; the file each rule did not choose is unreadable."""
    chosen = {}
    for job, rule, name, other in (
        ("0", "last", "last.ckpt", "best-epoch000-dsc0.4.ckpt"),
        ("1", "best_on_val", "best-epoch001-dsc0.5.ckpt", "last.ckpt"),
    ):
        folder = sweep / job / "checkpoints"
        folder.mkdir(parents=True)
        (sweep / job / ".hydra").mkdir()  # the folds of one configuration
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- data.split.fold={job}\n")
        shutil.copy(ckpt, folder / name)
        (folder / other).write_text("not the checkpoint the selection rule reports")
        metrics = read_metrics(ckpt.parent.parent)  # the run's own, as each job would write
        selected = replace(
            metrics.selected, rule=rule, checkpoint=f"/elsewhere/{job}/checkpoints/{name}"
        )
        write_metrics(sweep / job, replace(metrics, selection=rule, selected=selected))
        chosen[str((folder / name).resolve())] = rule
    return chosen


def test_sweep_ensemble_and_onnx_give_the_same_masks(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, caplog
) -> None:
    patient = synthetic_root / json.loads((tiny_run / "split.json").read_text())["val"][0]
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    sweep = tmp_path / "sweep"
    chosen = _moved_sweep(ckpt, sweep)
    common = [f"input={patient}", "figures.overlays=false"]
    single = _predict_inprocess(
        *common, f"checkpoints=[{ckpt}]", f"output_dir={tmp_path / 'single'}"
    )
    with caplog.at_level(logging.INFO, logger="brainseg"):
        ensemble = _predict_inprocess(
            *common, f"sweep_dir={sweep}", f"output_dir={tmp_path / 'ensemble'}"
        )
    assert len(ensemble["members"]) == 2 and ensemble["dsc"] == single["dsc"]
    assert ensemble["selection"] == chosen
    assert (
        "checkpoints selected on their validation patients (evaluation.selection=best_on_val"
        in (caplog.text)
    )
    _predict_inprocess("export=onnx", f"checkpoints=[{ckpt}]", f"output_dir={tmp_path / 'onnx'}")
    via_onnx = _predict_inprocess(
        *common, f"onnx={tmp_path / 'onnx' / 'model.onnx'}", f"output_dir={tmp_path / 'o'}"
    )
    for name in ("ensemble", "o"):
        for mask in (tmp_path / "single" / patient.name).glob("*.tif"):
            np.testing.assert_array_equal(
                tifffile.imread(mask), tifffile.imread(tmp_path / name / patient.name / mask.name)
            )
    assert via_onnx["dsc"]["by_subset"]["all"]["dsc"]["mean"] == pytest.approx(
        single["dsc"]["by_subset"]["all"]["dsc"]["mean"], abs=1e-6
    )


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda t, c, r: [f"input={r}", f"checkpoints=[{t}/missing.ckpt]"],
            "missing.ckpt: checkpoint not found",
        ),
        (
            lambda t, c, r: [f"input={r}", f"checkpoints=[{t}/split.json]"],
            "split.json: not a readable PyTorch checkpoint",
        ),
        (
            lambda t, c, r: [f"input={r}", f"checkpoints=[{c}]", "+model.encoder_name=resnet34"],
            "model.encoder_name='resnet34' does not match last.ckpt",
        ),
        (
            lambda t, c, r: [f"input={r}/nothing", f"checkpoints=[{c}]"],
            "nothing: data root does not exist",
        ),
        (lambda t, c, r: [f"input={t}/checkpoints", f"checkpoints=[{c}]"], "no patient folders"),
    ],
)
def test_bad_input_one_line_errors(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, capsys, setup, expected: str
) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose(
        [
            *setup(tiny_run, ckpt, synthetic_root),
            f"output_dir={tmp_path / 'out'}",
            "progress=false",
        ],
        hydra_node=False,
        config_name="predict",
    )
    with pytest.raises(SystemExit):
        run_task(predict, cfg)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last


def test_slice_of_another_shape_is_named(
    tiny_run: Path, copied_root: Path, tmp_path: Path, capsys
) -> None:
    patient = find_patients(copied_root)[0]
    tifffile.imwrite(patient.images[3], np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    cfg = compose(
        [
            f"input={patient.folder}",
            f"checkpoints=[{tiny_run}/checkpoints/last.ckpt]",
            f"output_dir={tmp_path / 'out'}",
            "progress=false",
        ],
        hydra_node=False,
        config_name="predict",
    )
    with pytest.raises(SystemExit):
        run_task(predict, cfg)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"{patient.images[3].name}: slice is (32, 32), other slices of the patient are (64, 64)"
        in last
    )


def test_evaluate_on_the_written_masks_reproduces_the_scores(
    predicted: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    from brainseg.evaluate import main as evaluate

    assert evaluate([str(predicted), str(synthetic_root), "--output", str(tmp_path / "eval")]) == 0
    with open(predicted / "dsc.csv") as fh:
        by_predict = list(csv.DictReader(fh))
    with open(tmp_path / "eval" / "dsc.csv") as fh:
        by_evaluate = list(csv.DictReader(fh))
    assert {"hd95", "assd", "nsd", "lesion_recall", "volume_difference"} <= set(by_evaluate[0])
    assert {r["subset"] for r in by_evaluate} == {"unseen"}  # no split given: all in the headline

    def scores(rows: list[dict]) -> list[dict]:  # predict.py alone knows the probabilities
        return [
            {k: v for k, v in row.items() if k not in ("subset", "uncertainty")} for row in rows
        ]

    assert scores(by_evaluate) == scores(by_predict)
    assert (tmp_path / "eval" / "failures.png").stat().st_size > 1000  # the truth root's images


def test_evaluate_given_the_split_gives_predicts_held_out_headline(
    predicted: Path, synthetic_root: Path, tiny_run: Path, tmp_path: Path, capsys
) -> None:
    from brainseg.evaluate import main as evaluate

    out = tmp_path / "eval"
    args = [str(predicted), str(synthetic_root), "--output", str(out), "--split", str(tiny_run)]
    assert evaluate(args) == 0  # before: no --split, a headline over all 6 patients
    by_predict = json.loads((predicted / "dsc_summary.json").read_text())
    by_evaluate = json.loads((out / "dsc_summary.json").read_text())
    assert by_evaluate["n_held_out"] == by_predict["n_held_out"] == 2
    assert by_evaluate["dsc"] == by_predict["dsc"]
    with open(predicted / "dsc.csv") as fh:
        subsets = {r["patient"]: r["subset"] for r in csv.DictReader(fh)}
    with open(out / "dsc.csv") as fh:
        assert {r["patient"]: r["subset"] for r in csv.DictReader(fh)} == subsets
    mean = by_predict["dsc"]["mean"]
    assert f"per-volume DSC over 2 held-out patients: mean {mean:.4f}" in capsys.readouterr().out


def test_uncertainty_is_scored_against_failures_and_the_worst_are_drawn(
    predicted: Path, synthetic_root: Path
) -> None:
    with open(predicted / "dsc.csv") as fh:
        rows = list(csv.DictReader(fh))
    prediction = json.loads((predicted / "prediction.json").read_text())
    assert {r["patient"]: float(r["uncertainty"]) for r in rows} == pytest.approx(
        prediction["uncertainty"], abs=1e-6
    )
    flags = json.loads((predicted / "dsc_summary.json").read_text())["uncertainty_flags_failures"]
    held_out = [r for r in rows if r["subset"] != "train"]
    assert flags["n"] == len(held_out) == 2
    assert flags["failures"] == sum(float(r["dsc"]) < 0.5 for r in held_out)
    assert (predicted / "failures.png").stat().st_size > 1000
    patient = find_patients(synthetic_root)[0]
    probs = np.load(predicted / patient.name / "probabilities.npy")
    entropy = np.load(predicted / patient.name / "entropy.npy")
    assert probs.shape == entropy.shape == (len(patient.images), 64, 64)
    assert probs.dtype == np.float16 and 0 <= probs.min() and probs.max() <= 1


def test_the_fitted_temperature_goes_with_the_model_to_the_probabilities(
    predicted: Path, tiny_run: Path
) -> None:
    recorded = json.loads((tiny_run / "calibration.json").read_text())["temperature"]
    for name in ("last.ckpt", *[p.name for p in (tiny_run / "checkpoints").glob("best-*.ckpt")]):
        member = load_checkpoint(tiny_run / "checkpoints" / name)
        assert member.temperature == pytest.approx(recorded), name
    assert json.loads((predicted / "prediction.json").read_text())["temperature"] == (
        pytest.approx(recorded)
    )
