"""Post-processing steps, the step-list checks, and the recorded `auto` decision re-read by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import compose, compose_run

from brainseg.errors import ConfigError, DataError
from brainseg.postprocessing import STEPS, apply, check_steps
from brainseg.prediction.members import Member
from brainseg.prediction.postprocess import ADOPTION_RULE, decision_path, resolve_postprocessing


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


class _Predictor:
    def __init__(self, path: Path) -> None:
        self.members = [
            Member(
                path=path,
                preprocess=None,
                model={},
                data_root=str(path.parent),
                split={"val": ["p"]},
            )
        ]


def test_a_recorded_decision_is_reread_by_step_name(tmp_path: Path) -> None:
    predictor = _Predictor(tmp_path / "best.ckpt")
    candidates = [[], [{"name": "largest_component"}]]
    key = {
        "members": [str((tmp_path / "best.ckpt").resolve())],
        "views": ["identity"],
        "threshold": 0.5,
        "patients": ["p"],
        "data_root": str(tmp_path.resolve()),
        "candidates": candidates,
        "ensemble": "out_of_fold",
        "rule": ADOPTION_RULE,
    }
    path = decision_path(predictor.members[0])
    decision = {
        "postprocessing": [{"name": "remove_small_components", "min_voxels": 4}],
        "patients": ["p"],
    }
    path.write_text(json.dumps({"key": key, "decision": decision}))
    chosen = resolve_postprocessing(
        "auto", predictor, 0.5, ["identity"], {"candidates": candidates}
    )
    assert chosen["postprocessing"] == decision["postprocessing"] and chosen["source"] == str(path)
    path.write_text(json.dumps({"key": key, "decision": {"postprocessing": [{"name": "lcc"}]}}))
    with pytest.raises(
        DataError, match=r"best.postprocess.json: postprocessing\[0\]: unknown step 'lcc'"
    ):
        resolve_postprocessing("auto", predictor, 0.5, ["identity"], {"candidates": candidates})


def test_a_fixed_step_list_needs_no_data(tmp_path: Path) -> None:
    predictor = _Predictor(tmp_path / "best.ckpt")
    chosen = resolve_postprocessing(["largest_component"], predictor, 0.5, [], {})
    assert chosen == {"postprocessing": [{"name": "largest_component"}], "source": "config"}
    with pytest.raises(ConfigError, match="postprocessing='lcc' must be auto or a step list"):
        resolve_postprocessing("lcc", predictor, 0.5, [], {})
