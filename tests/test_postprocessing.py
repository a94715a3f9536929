"""Post-processing steps, the step-list checks, the one scorer, the decision rule on saved
predictions, where the decision is recorded and who takes it, and which steps predict.py applies."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from helpers import compose, compose_run

from brainseg.checkpoint import Provenance, read_checkpoint
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import dice_score
from brainseg.postprocessing import STEPS, apply, check_steps, score
from brainseg.postprocessing.__main__ import main as postprocessing_cli
from brainseg.postprocessing.decision import decide
from brainseg.postprocessing.records import (
    DECISION_FILE,
    decide_run,
    pooled_decision,
    save_prediction,
    steps_to_apply,
)
from brainseg.run_lock import LOCK_NAME

LCC = [{"name": "largest_component"}]
CANDIDATES = [[], LCC]


def _mask() -> np.ndarray:
    """A 3x3x3 block with an enclosed centre voxel missing, and a lone voxel far from it."""
    mask = np.zeros((5, 8, 8), bool)
    mask[1:4, 2:5, 2:5] = True
    mask[2, 3, 3] = False  # enclosed hole
    mask[0, 7, 7] = True
    return mask


def test_steps_do_what_their_names_say() -> None:
    mask = _mask()
    assert apply(mask, []).sum() == mask.sum() == 27
    assert (
        apply(mask, ["largest_component"]).sum() == 26
        and not apply(mask, ["largest_component"])[0, 7, 7]
    )
    kept = apply(mask, [{"name": "remove_small_components", "min_voxels": 2}])
    assert np.array_equal(kept, apply(mask, ["largest_component"]))
    assert apply(mask, [{"name": "remove_small_components", "min_voxels": 27}]).sum() == 0
    filled = apply(mask, [{"name": "fill_holes"}])
    assert filled[2, 3, 3] and filled.sum() == 28
    both = apply(mask, [{"name": "fill_holes"}, {"name": "largest_component"}])
    assert both.sum() == 27 and not both[0, 7, 7]


def test_registry_is_the_step_functions() -> None:
    assert sorted(STEPS) == ["fill_holes", "largest_component", "remove_small_components"]
    assert check_steps(["largest_component"]) == [{"name": "largest_component"}]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"name": "lcc"}],
            r"postprocessing\[0\]: unknown step 'lcc'; choose one of \['fill_holes', ",
        ),
        ([{"name": "remove_small_components"}], "missing a required argument: 'min_voxels'"),
        (
            ["largest_component", {"name": "fill_holes", "size": 3}],
            r"postprocessing\[1\] \(fill_holes\): .*'size'",
        ),
    ],
)
def test_bad_step_lists_are_named(steps: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_steps(steps)


@pytest.mark.parametrize("value", ["abc", -1, 0, 2.5, True, None])
def test_step_argument_values_are_checked(value) -> None:
    steps = [{"name": "remove_small_components", "min_voxels": value}]
    with pytest.raises(ConfigError) as raised:  # before: accepted ("abc" failed after the work)
        check_steps(steps)
    assert str(raised.value) == (
        "postprocessing[0] (remove_small_components): "
        f"min_voxels must be a positive whole number, not {value!r}"
    )


BAD_STEPS = "postprocessing=[{name:remove_small_components,min_voxels:abc}]"


def test_train_and_predict_check_step_arguments_before_any_work(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from brainseg.prediction.pipeline import predict
    from brainseg.training.pipeline import train

    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"postprocessing\[0\] \(remove_small_components\)"):
        train(compose_run(synthetic_root, run, tmp_path / "cache", BAD_STEPS))
    assert not run.exists()  # before: the error came after the first validation epoch
    cfg = compose(
        [f"input={synthetic_root}", f"checkpoints=[{tmp_path / 'none.ckpt'}]", BAD_STEPS],
        hydra_node=False,
        config_name="predict",
    )
    with pytest.raises(ConfigError, match=r"postprocessing\[0\] \(remove_small_components\)"):
        predict(cfg)  # before: after predicting every patient


def _patient(hit_rows: int, false_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2x8x8 lesion, a prediction covering `hit_rows` of its 8 rows, and a separate false
    blob of `false_voxels` voxels."""
    truth = np.zeros((4, 32, 32), bool)
    truth[1:3, 2:10, 2:10] = True
    raw = np.zeros_like(truth)
    raw[1:3, 2 : 2 + hit_rows, 2:10] = True
    blob = np.zeros((16, 16), bool)
    blob.flat[:false_voxels] = True
    raw[3, 16:, 16:] = blob
    return raw, truth


def _predictions() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Three patients that a largest-component step helps (a small false blob goes), and one whose
    small true hit is outweighed by a larger false blob, so the step erases its lesion."""
    helped = [(f"p{i}", *_patient(hit_rows=8, false_voxels=100)) for i in range(3)]
    raw, truth = _patient(hit_rows=1, false_voxels=40)
    return [*helped, ("erased", raw, truth)]


def test_the_rule_adopts_a_step_that_helps_most_patients_and_lists_the_lesion_it_erases() -> None:
    predictions = _predictions()
    decision = decide(predictions, CANDIDATES)
    for name, raw, truth in predictions:
        assert decision["per_patient"][name] == [
            dice_score(raw, truth),
            dice_score(apply(raw, LCC), truth),
        ]
    assert decision["per_patient"]["erased"][0] > 0 and decision["per_patient"]["erased"][1] == 0
    (comparison,) = decision["comparisons"]
    # the erased lesion is one hurt patient, its whole loss in the mean: outvoted here
    assert (comparison["helped"], comparison["hurt"], comparison["adopted"]) == (3, 1, True)
    assert comparison["dsc"] > comparison["dsc_current"]
    assert decision["postprocessing"] == LCC and decision["erased"] == ["erased"]
    assert [c["erased"] for c in decision["candidates"]] == [[], ["erased"]]
    # without the three helped patients the loss outweighs the gain: the simpler candidate stays
    alone = decide(predictions[-1:], CANDIDATES)
    assert alone["postprocessing"] == [] and alone["erased"] == []


def _run(folder: Path, predictions: list, overrides: list[str] | None = None) -> Path:
    """A run directory with saved validation predictions (and, as a sweep's job, its overrides)."""
    for name, raw, truth in predictions:
        save_prediction(folder, name, raw, truth)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def _checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": {}, "hyper_parameters": {"postprocessing": LCC}}
    Provenance(config={}, data_root="/gone", preprocess={"image_size": 32}).store(checkpoint)
    torch.save(checkpoint, path)
    return path


def _recorded_steps(checkpoint: Path) -> list:
    return Provenance.read(read_checkpoint(checkpoint), checkpoint).postprocessing["steps"]


def test_a_run_decision_is_recorded_in_the_run_and_its_checkpoints(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", _predictions())
    checkpoints = [
        _checkpoint(run / "checkpoints" / n) for n in ("best-epoch001.ckpt", "last.ckpt")
    ]
    decision = decide_run(run, CANDIDATES)
    assert decision == {
        **decide(sorted(_predictions()), CANDIDATES),
        "folder": str(run.resolve()),
    }
    assert json.loads((run / DECISION_FILE).read_text()) == decision
    assert decision["metrics"]["p0"] == score(*_predictions()[0][1:], LCC)
    for path in checkpoints:  # predict.py given the checkpoint alone applies the run's decision
        record = Provenance.read(read_checkpoint(path), path).postprocessing
        assert record["steps"] == LCC and record["erased"] == ["erased"]
        assert record["decision"] == str((run / DECISION_FILE).resolve())


def test_decide_keeps_the_previous_decision_and_a_run_in_use(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path / "run", _predictions())
    checkpoint = _checkpoint(run / "checkpoints" / "last.ckpt")
    decide_run(run, CANDIDATES)
    first, saved = (run / DECISION_FILE).read_text(), checkpoint.read_bytes()
    assert postprocessing_cli(["decide", str(run), "--candidates", "[[]]"]) == 2
    assert "holds a decision already; pass --overwrite" in capsys.readouterr().err
    held = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # as a live train.py holds it
    os.write(held, json.dumps({"pid": 1, "host": "elsewhere"}).encode())
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert postprocessing_cli(["decide", str(run), "--candidates", "[[]]", "--overwrite"]) == 2
    finally:
        os.close(held)
    assert f"{run}: run directory in use by pid" in capsys.readouterr().err
    assert (run / DECISION_FILE).read_text() == first and checkpoint.read_bytes() == saved
    # re-decided from the saved files alone
    assert postprocessing_cli(["decide", str(run), "--candidates", "[[]]", "--overwrite"]) == 0
    assert json.loads((run / DECISION_FILE).read_text())["postprocessing"] == []
    assert _recorded_steps(checkpoint) == []
    assert postprocessing_cli(["decide", str(run), "--overwrite"]) == 0  # the recorded candidates
    assert json.loads((run / DECISION_FILE).read_text())["candidates"][0]["postprocessing"] == []


def _folds(sweep: Path) -> list[Path]:
    """Two folds whose own decisions differ: fold 0 (p0, p1) keeps largest_component, fold 1
    (erased, p2) does not; pooled, the step helps 3 of 4 patients and is kept."""
    predictions = _predictions()
    folds = []
    for fold, part in enumerate((predictions[:2], predictions[2:])):
        run = _run(sweep / str(fold), part, [f"data.split.fold={fold}", "loss=dice"])
        folds.append(run)
        decide_run(run, CANDIDATES)
    return folds


def test_a_k_fold_configuration_has_one_decision_pooled_out_of_fold(tmp_path: Path, capsys) -> None:
    folds = _folds(tmp_path / "sweep")
    own = [json.loads((f / DECISION_FILE).read_text())["postprocessing"] for f in folds]
    assert own == [LCC, []]
    decision = pooled_decision(folds)
    assert decision["postprocessing"] == LCC and decision["erased"] == ["1/erased"]
    assert decision["patients"] == ["0/p0", "0/p1", "1/erased", "1/p2"]
    assert pooled_decision(folds[:1]) is None  # a single run: its own decision stands
    decide_run(folds[1], [[], [{"name": "fill_holes"}]])
    with pytest.raises(ConfigError, match="its runs were decided among different candidates"):
        pooled_decision(folds)
    # the folds need no command; `decide` is for a run
    assert postprocessing_cli(["decide", str(tmp_path / "sweep")]) == 2
    line = capsys.readouterr().err.strip()
    assert "sweep: not a run directory with saved validation predictions" in line
    assert "\n" not in line and not (tmp_path / "sweep" / DECISION_FILE).exists()


def _member(path: Path, steps: list, source: str = "decided after training") -> tuple:
    return path, {"steps": steps, "source": source}


def test_predict_applies_the_recorded_steps_unless_a_list_is_given(tmp_path: Path) -> None:
    members = [_member(tmp_path / "a.ckpt", LCC), _member(tmp_path / "b.ckpt", LCC)]
    assert steps_to_apply(None, members) == {
        "postprocessing": LCC,
        "source": "decided after training",
    }
    assert steps_to_apply([], members) == {"postprocessing": [], "source": "config"}
    with pytest.raises(ConfigError, match="postprocessing='auto' must be a step list"):
        steps_to_apply("auto", members)
    members[1] = _member(tmp_path / "b.ckpt", [])
    with pytest.raises(ConfigError, match="a.ckpt and .*b.ckpt record different post-processing"):
        steps_to_apply(None, members)
    folds = _folds(tmp_path / "sweep")  # a k-fold configuration's folds: their pooled decision
    assert steps_to_apply(None, members, folds) == {
        "postprocessing": LCC,
        "source": "decided on the 4 patients of 2 folds pooled",
    }
    with pytest.raises(DataError, match=r"a.ckpt: postprocessing\[0\]: unknown step 'lcc'"):
        steps_to_apply(None, [_member(tmp_path / "a.ckpt", [{"name": "lcc"}])])


def _scored_case() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Two patients: a lesion with a hole, a ragged edge, a false blob and a lone voxel; and an
    empty truth with two false components."""
    rng = np.random.default_rng(7)
    truth = np.zeros((6, 24, 24), bool)
    truth[1:5, 4:14, 5:15] = True
    raw = truth.copy()
    raw[2, 8, 9] = False
    raw[1:5, 4, 5:15] = rng.random((4, 10)) > 0.3
    raw[3:5, 18:22, 18:21] = True
    raw[0, 0, 23] = True
    empty = np.zeros_like(truth)
    false = np.zeros_like(truth)
    false[2:4, 10:12, 3:6] = True
    false[5, 20, 20] = True
    return [("a", raw, truth), ("b", false, empty)]


SCORED_STEPS = [[], LCC, [{"name": "remove_small_components", "min_voxels": 3}, "fill_holes"]]
# What the four scoring loops that `score` replaced (the final validation's, the decision's,
# predict.py's dsc.csv rows, brainseg.evaluate's) computed on `_scored_case`, per step list and
# patient, in the columns of dsc.csv; and the final validation's nsd at a tolerance of 0.5.
SCORED_COLUMNS = [
    *("dsc", "hd95", "assd", "nsd", "volume_difference", "lesions_true", "lesions_predicted"),
    *("lesions_found", "lesions_hit", "lesion_recall", "lesion_precision", "lesion_voxels"),
    *("predicted_voxels", "slices"),
]
SCORED_BEFORE = {
    (0, "a"): (0.9506172839506173, 7.911052989959711, 0.4106308084673586, 0.9557522123893806,
               10, 1, 3, 1, 1, 1.0, 0.3333333333333333, 400, 410, 6),
    (0, "b"): (0.0, 32.90896534380867, 32.90896534380867, 0.0, 13, 0, 2, 0, 0, 0.0, 0.0, 0, 13, 6),
    (1, "a"): (0.9808917197452229, 0.44999999999998863, 0.044444444444444446, 1.0,
               15, 1, 1, 1, 1, 1.0, 1.0, 400, 385, 6),
    (1, "b"): (0.0, 32.90896534380867, 32.90896534380867, 0.0, 12, 0, 1, 0, 0, 0.0, 0.0, 0, 12, 6),
    (2, "a"): (0.9530864197530864, 7.8102498054504395, 0.38838445735105676, 0.9570661896243292,
               10, 1, 2, 1, 1, 1.0, 0.5, 400, 410, 6),
    (2, "b"): (0.0, 32.90896534380867, 32.90896534380867, 0.0, 12, 0, 1, 0, 0, 0.0, 0.0, 0, 12, 6),
}  # fmt: skip
NSD_AT_HALF_A_PIXEL_BEFORE = {0: 0.9132743362831859, 1: 0.9555555555555556, 2: 0.9230769230769231}


def test_the_one_scorer_gives_the_figures_of_the_loops_it_replaced(tmp_path: Path) -> None:
    from brainseg.evaluate import main as evaluate

    case = _scored_case()
    for index, steps in enumerate(SCORED_STEPS):
        for name, raw, truth in case:
            expected = dict(zip(SCORED_COLUMNS, SCORED_BEFORE[index, name]))
            assert score(raw, truth, steps) == pytest.approx(expected, abs=1e-12)
        # each candidate of a decision; the final validation: the decision's chosen metrics
        chosen = decide(case, [steps], tolerance=0.5)["metrics"]
        assert chosen["a"]["nsd"] == pytest.approx(NSD_AT_HALF_A_PIXEL_BEFORE[index], abs=1e-12)
        assert chosen["b"] == pytest.approx(dict(zip(SCORED_COLUMNS, SCORED_BEFORE[index, "b"])))
    per_patient = decide(case, SCORED_STEPS)["per_patient"]
    assert per_patient == {n: [SCORED_BEFORE[i, n][0] for i in range(3)] for n in ("a", "b")}
    # brainseg.evaluate on the masks written as TIFFs, as predict.py writes them
    for folder, index in (("pred", 1), ("truth", 2)):
        for patient in case:
            (tmp_path / folder / patient[0]).mkdir(parents=True)
            for z, mask in enumerate(patient[index], start=1):
                path = tmp_path / folder / patient[0] / f"{patient[0]}_{z}_mask.tif"
                tifffile.imwrite(path, mask.astype(np.uint8) * 255)
    steps = json.dumps(SCORED_STEPS[2])
    arguments = [str(tmp_path / "pred"), str(tmp_path / "truth"), "--output", str(tmp_path / "o")]
    assert evaluate([*arguments, "--postprocessing", steps]) == 0
    rows = (tmp_path / "o" / "dsc.csv").read_text().splitlines()
    columns = rows[0].split(",")
    for row in rows[1:]:
        values = dict(zip(columns, row.split(",")))
        expected = dict(zip(SCORED_COLUMNS, SCORED_BEFORE[2, values["patient"]]))
        assert {k: float(values[k]) for k in SCORED_COLUMNS} == pytest.approx(expected, abs=1e-6)


def test_a_decision_file_is_strict_json_even_with_a_nan_figure(tmp_path: Path, monkeypatch) -> None:
    from brainseg.postprocessing import records

    run = _run(tmp_path / "run", _predictions())
    decided = decide(sorted(_predictions()), CANDIDATES)
    decided["metrics"]["p0"] = {**decided["metrics"]["p0"], "hd95": float("nan")}
    monkeypatch.setattr(records, "decide", lambda *args: decided)
    decide_run(run, CANDIDATES)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{DECISION_FILE} holds {constant}")

    written = json.loads((run / DECISION_FILE).read_text(), parse_constant=refuse)
    assert written["metrics"]["p0"]["hd95"] is None  # before: NaN, which strict readers refuse
