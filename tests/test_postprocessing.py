"""Post-processing steps, the step-list checks, the decision rule on saved predictions, where the
decision is recorded, and which steps predict.py applies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, compose_run

from brainseg.checkpoint import Provenance, read_checkpoint
from brainseg.errors import ConfigError, DataError
from brainseg.metrics import dice_score
from brainseg.postprocessing import STEPS, apply, check_steps
from brainseg.postprocessing.__main__ import main as postprocessing_cli
from brainseg.postprocessing.decision import decide
from brainseg.postprocessing.records import DECISION_FILE, decide_folder, save_prediction
from brainseg.prediction.members import Member
from brainseg.prediction.postprocess import resolve_postprocessing

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


def _checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": {}, "hyper_parameters": {"postprocessing": LCC}}
    Provenance(config={}, data_root="/gone", preprocess={"image_size": 32}).store(checkpoint)
    torch.save(checkpoint, path)
    return path


def _run(folder: Path, predictions: list) -> Path:
    for name, raw, truth in predictions:
        save_prediction(folder, name, raw, truth)
    return folder


def test_a_run_decision_is_recorded_in_the_run_and_its_checkpoints(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", _predictions())
    checkpoints = [
        _checkpoint(run / "checkpoints" / n) for n in ("best-epoch001.ckpt", "last.ckpt")
    ]
    decision = decide_folder(run, CANDIDATES)
    assert decision == {
        **decide(sorted(_predictions()), CANDIDATES),
        "scope": "run",
        "folder": str(run.resolve()),
    }
    assert json.loads((run / DECISION_FILE).read_text()) == decision
    for path in checkpoints:
        record = Provenance.read(read_checkpoint(path), path).postprocessing
        assert record["steps"] == LCC and record["erased"] == ["erased"]
        assert record["decision"] == str((run / DECISION_FILE).resolve())
    # re-decided from the saved files alone, among the recorded candidates
    assert postprocessing_cli(["decide", str(run), "--candidates", "[[]]"]) == 0
    assert json.loads((run / DECISION_FILE).read_text())["postprocessing"] == []
    assert Provenance.read(read_checkpoint(checkpoints[0]), "x").postprocessing["steps"] == []
    assert decide_folder(run)["candidates"][0]["postprocessing"] == []


def test_a_sweep_decides_once_on_all_jobs_pooled(tmp_path: Path, capsys) -> None:
    predictions = _predictions()
    sweep = tmp_path / "sweep"
    for job, part in (("0", predictions[:2]), ("1", predictions[2:])):
        decide_folder(_run(sweep / job, part), CANDIDATES)
    assert postprocessing_cli(["decide", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "post-processing chosen: ['largest_component'] on 4 validation patients" in printed
    decision = json.loads((sweep / DECISION_FILE).read_text())
    assert decision["patients"] == ["0/p0", "0/p1", "1/erased", "1/p2"]
    assert decision["erased"] == ["1/erased"] and decision["jobs"] == ["0", "1"]
    decide_folder(sweep / "1", [[], [{"name": "fill_holes"}]])
    with pytest.raises(ConfigError, match="were decided among different candidates"):
        decide_folder(sweep)
    assert postprocessing_cli(["decide", str(tmp_path / "nothing")]) == 2
    assert "nothing: no saved validation predictions" in capsys.readouterr().err


def _member(path: Path, steps: list, source: str = "decided after training") -> Member:
    return Member(
        path=path, preprocess=None, model={}, postprocessing={"steps": steps, "source": source}
    )


def test_predict_applies_the_recorded_steps_unless_a_list_is_given(tmp_path: Path) -> None:
    members = [_member(tmp_path / "a.ckpt", LCC), _member(tmp_path / "b.ckpt", LCC)]
    assert resolve_postprocessing(None, members) == {
        "postprocessing": LCC,
        "source": "decided after training",
    }
    assert resolve_postprocessing([], members) == {"postprocessing": [], "source": "config"}
    with pytest.raises(ConfigError, match="postprocessing='auto' must be a step list"):
        resolve_postprocessing("auto", members)
    members[1] = _member(tmp_path / "b.ckpt", [])
    with pytest.raises(ConfigError, match="a.ckpt and .*b.ckpt record different post-processing"):
        resolve_postprocessing(None, members)
    sweep = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="python -m brainseg.postprocessing decide"):
        resolve_postprocessing(None, members, sweep)
    sweep.mkdir()
    (sweep / DECISION_FILE).write_text(json.dumps({"postprocessing": ["fill_holes"]}))
    assert resolve_postprocessing(None, members, sweep) == {
        "postprocessing": [{"name": "fill_holes"}],
        "source": str(sweep / DECISION_FILE),
    }
    (sweep / DECISION_FILE).write_text(json.dumps({"postprocessing": [{"name": "lcc"}]}))
    with pytest.raises(DataError, match=r"postprocessing.json: postprocessing\[0\]: unknown step"):
        resolve_postprocessing(None, members, sweep)
    with pytest.raises(DataError, match=r"a.ckpt: postprocessing\[0\]: unknown step 'lcc'"):
        resolve_postprocessing(None, [_member(tmp_path / "a.ckpt", [{"name": "lcc"}])])
