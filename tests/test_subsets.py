"""Honest predict reports: patient subsets from the recorded splits, out-of-fold member plans,
held-out summaries, and the largest-component decision rule."""

from __future__ import annotations

import logging

import pytest

from brainseg.errors import ConfigError
from brainseg.evaluation.folds import held_out_members
from brainseg.postprocessing.decision import compare
from brainseg.prediction.pipeline import member_plan, subsets_for, warn_seen_in_training
from brainseg.reporting.scores import patient_subset, subset_summary

# three folds over six patients, plus a test patient nobody trained on
FOLDS = [
    {"train": ["c", "d", "e", "f"], "val": ["a", "b"], "test": ["t"]},
    {"train": ["a", "b", "e", "f"], "val": ["c", "d"], "test": ["t"]},
    {"train": ["a", "b", "c", "d"], "val": ["e", "f"], "test": ["t"]},
]


def test_held_out_members_are_the_folds_that_did_not_train_on_the_patient() -> None:
    assert held_out_members(FOLDS, ["a", "d", "f", "t", "new"]) == {
        "a": [0],
        "d": [1],
        "f": [2],
        "t": [0, 1, 2],
        "new": [0, 1, 2],
    }


def test_out_of_fold_plan_and_subsets() -> None:
    names = ["a", "c", "e", "t", "new"]
    plan = member_plan(FOLDS, names, "out_of_fold")
    assert plan == {"a": [0], "c": [1], "e": [2], "t": [0, 1, 2], "new": [0, 1, 2]}
    assert subsets_for(plan, FOLDS) == {
        "a": "val",
        "c": "val",
        "e": "val",
        "t": "test",
        "new": "unseen",
    }
    everyone = member_plan(FOLDS, names, "all")
    assert subsets_for(everyone, FOLDS) == {
        "a": "train",
        "c": "train",
        "e": "train",
        "t": "test",
        "new": "unseen",
    }
    with pytest.raises(
        ConfigError, match=r"ensemble='every' is unknown; choose one of \['out_of_fold', 'all'\]"
    ):
        member_plan(FOLDS, names, "every")


def test_a_patient_every_member_trained_on_falls_back_to_all_and_is_train() -> None:
    seeds = [FOLDS[0], FOLDS[0]]  # two seeds on one split
    plan = member_plan(seeds, ["c", "a"], "out_of_fold")
    assert plan == {"c": [0, 1], "a": [0, 1]}
    assert patient_subset("c", seeds) == "train" and patient_subset("a", seeds) == "val"


def test_seen_patients_are_named_in_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="brainseg"):
        assert warn_seen_in_training({"b": "train", "a": "train", "t": "test"}) == ["a", "b"]
        assert warn_seen_in_training({"t": "test"}) == []
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and record.getMessage().endswith("a, b")


def _row(name: str, subset: str, dsc: float) -> dict:
    return {"patient": name, "subset": subset, "dsc": dsc}


def test_summary_headlines_held_out_patients_and_keeps_every_subset() -> None:
    rows = [
        _row("a", "train", 0.9),
        _row("b", "train", 0.8),
        _row("c", "val", 0.4),
        _row("d", "val", 0.6),
        _row("t", "test", 0.2),
    ]
    summary = subset_summary(rows)
    assert summary["n_held_out"] == 3 and summary["dsc"]["mean"] == pytest.approx(0.4)
    assert summary["by_subset"]["train"]["dsc"]["mean"] == pytest.approx(0.85)
    assert (
        summary["by_subset"]["val"]["dsc"]["n"] == 2
        and summary["by_subset"]["test"]["dsc"]["n"] == 1
    )
    assert (
        summary["by_subset"]["all"]["dsc"]["mean"] == pytest.approx(0.58)
        and "unseen" not in summary["by_subset"]
    )
    only_train = subset_summary(rows[:2])
    assert only_train["n_held_out"] == 0 and "dsc" not in only_train


def test_a_tiny_mean_gain_that_hurts_most_patients_is_not_adopted() -> None:
    # one patient gains 0.2, three lose 0.06: the mean rises by 0.005 but most patients are hurt
    decision = compare([0.8, 0.49, 0.49, 0.49], [0.6, 0.55, 0.55, 0.55])
    assert decision["dsc"] > decision["dsc_current"]
    assert decision["adopted"] is False and (decision["helped"], decision["hurt"]) == (1, 3)


def test_a_gain_on_most_patients_is_adopted_and_unchanged_patients_do_not_vote() -> None:
    decision = compare([0.7, 0.6, 0.5, 0.5, 0.3], [0.6, 0.55, 0.5, 0.5, 0.32])
    assert decision["adopted"] is True and (
        decision["helped"],
        decision["hurt"],
        decision["unchanged"],
    ) == (2, 1, 2)
    assert 0 < decision["wilcoxon_p_greater"] < 1
    assert compare([0.5, 0.4], [0.5, 0.4])["adopted"] is False  # no change: keep the simpler


def test_a_training_patient_in_a_renamed_folder_stays_a_training_patient(tmp_path) -> None:
    import numpy as np
    import tifffile

    from brainseg.data.reader import find_patients

    folder = tmp_path / "c_renamed"
    folder.mkdir()
    tifffile.imwrite(folder / "c_1.tif", np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    names = [p.name for p in find_patients(tmp_path, require_masks=False)]
    plan = member_plan(FOLDS[:1], names, "out_of_fold")
    assert subsets_for(plan, FOLDS[:1]) == {"c": "train"}  # before: {"c_renamed": "unseen"}
