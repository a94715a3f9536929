"""The sweep report's statistics and the out-of-fold pooling, on sweep folders written by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg.errors import ConfigError
from brainseg.postprocessing.decision import decide
from brainseg.postprocessing.records import decide_run, pooled_decision, save_prediction
from brainseg.reporting import figures
from brainseg.reporting.sweep import sweep_jobs, write_report
from brainseg.runfiles import (
    EpochScores,
    RunMetrics,
    Selected,
    SplitFile,
    TestScores,
    read_metrics,
    write_metrics,
    write_split,
)

PATIENTS = [f"P{i:02d}" for i in range(9)]


def _job(
    sweep: Path,
    number: int,
    overrides: list[str],
    val: list[str],
    dice: dict[str, float],
    rule: str = "last",
) -> Path:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    write_split(job, SplitFile("k_fold", sorted(set(PATIENTS) - set(val)), val))
    selected = EpochScores(
        epoch=5,
        step=50,
        values={
            "val/dsc_volume": float(np.mean([dice[p] for p in val])),
            "val/dsc_volume_median": 0.0,
        },
        per_patient={p: dice[p] for p in val},
        per_patient_metrics={p: {"dsc": dice[p], "hd95": 10 * (1 - dice[p])} for p in val},
    )
    best = EpochScores(epoch=3, step=30, values={"val/dsc_volume": selected.dsc_volume_mean + 0.1})
    write_metrics(
        job,
        RunMetrics(
            monitor="val/dsc_volume",
            higher_is_better=True,
            selection=rule,
            selected=Selected(selected, rule, checkpoint=str(job / "checkpoints" / "last.ckpt")),
            best=best,
            best_checkpoint=None,
            last_checkpoint=str(job / "checkpoints" / "last.ckpt"),
            epochs=5,
            train_seconds=1.0,
            history=[best, selected],
            finished=True,
        ),
    )
    return job


@pytest.fixture
def kfold_sweep(tmp_path: Path) -> Path:
    """model=unet,unetpp x data.split.fold=0,1,2 over 9 patients;
    unetpp is 0.1 better on every patient."""
    base = dict(zip(PATIENTS, np.linspace(0.3, 0.8, len(PATIENTS))))
    number = 0
    for model, shift in (("unet", 0.0), ("unetpp", 0.1)):
        for fold in range(3):
            _job(
                tmp_path,
                number,
                [f"model={model}", f"data.split.fold={fold}"],
                PATIENTS[fold::3],
                {p: v + shift for p, v in base.items()},
            )
            number += 1
    return tmp_path


def test_kfold_scores_are_pooled_over_patients_and_compared_per_patient(kfold_sweep: Path) -> None:
    report = write_report(kfold_sweep)
    with open(kfold_sweep / "per_patient.csv") as fh:
        rows = list(csv.DictReader(fh))
    for model in ("unet", "unetpp"):
        patients = [r["patient"] for r in rows if r["configuration"] == f"model={model}"]
        assert (
            sorted(patients) == PATIENTS
        )  # every patient exactly once, from the fold that held it out
    assert {r["fold"] for r in rows if r["patient"] == "P04"} == {"1"} and "hd95" in rows[0]
    best, other = report["configurations"]
    assert best["configuration"] == "model=unetpp" and best["n"] == 9 and best["jobs"] == 3
    assert best["mean"] == pytest.approx(
        np.mean(np.linspace(0.3, 0.8, 9)) + 0.1
    )  # pooled, not fold means
    assert (
        other["difference"] == pytest.approx(-0.1)
        and other["verdict"] == "worse"
        and other["p_holm"] < 0.05
    )
    summary = (kfold_sweep / "summary.md").read_text()
    assert "cross-validation: every patient scored by the fold that held it out, pooled" in summary
    assert "| model=unet | last | 3 | 9 | " in summary and "| worse |" in summary
    assert "6 jobs: 6 done.\n" in summary  # no word on a rule no job used
    assert (kfold_sweep / "summary.png").stat().st_size > 5000 and (
        kfold_sweep / "heatmap.png"
    ).stat().st_size > 5000


def _decided_folds(sweep: Path, models: tuple[str, ...] = ("unet",)) -> dict[str, float]:
    """Per model, two folds with saved validation predictions whose own decisions differ (fold 0
    keeps largest_component, fold 1 does not; pooled, it is kept); returns each patient's Dice
    after its fold's own decision, as each fold's metrics.json reports it."""
    from test_postprocessing import CANDIDATES, _predictions

    predictions, own = _predictions(), {}
    for number, (model, fold) in enumerate((m, f) for m in models for f in (0, 1)):
        part = predictions[2 * fold : 2 * fold + 2]
        dice = {name: m["dsc"] for name, m in decide(part, CANDIDATES)["metrics"].items()}
        job = _job(sweep, number, [f"model={model}", f"data.split.fold={fold}"], list(dice), dice)
        for prediction in part:
            save_prediction(job, *prediction)
        decide_run(job, CANDIDATES)
        own.update(dice)
    return own


def test_a_k_fold_configuration_is_scored_after_its_one_pooled_decision(tmp_path: Path) -> None:
    """The figure predict.py sweep_dir= reproduces: before, fold 1's patients kept fold 1's own
    decision (no step) while predict.py applied the pooled one (largest_component)."""
    own = _decided_folds(tmp_path)
    report = write_report(tmp_path)
    pooled = pooled_decision([tmp_path / "0", tmp_path / "1"])
    assert {r["patient"]: r["dsc"] for r in report["per_patient"]} == {
        name.split("/")[1]: metrics["dsc"] for name, metrics in pooled["metrics"].items()
    }
    assert pooled["metrics"]["1/p2"]["dsc"] != own["p2"]
    decided = "largest_component: decided on the 4 patients of its folds pooled"
    (configuration,) = report["configurations"]
    assert configuration["postprocessing"] == decided
    assert f"| all folds | last | 2 | 4 | {decided} |" in (tmp_path / "summary.md").read_text()


def test_configurations_are_never_one_pool_and_pick_best_says_what_the_report_can_tell(
    tmp_path: Path, caplog
) -> None:
    """`-m model=unet,unetpp data.split.fold=0,1` on the same 4 patients: each configuration is
    decided on its own 4 patients, never on 8, and predict.py's sweep_dir= needs pick=best."""
    _decided_folds(tmp_path, ("unet", "unetpp"))
    report = write_report(tmp_path)
    assert [r["postprocessing"] for r in report["configurations"]] == [
        "largest_component: decided on the 4 patients of its folds pooled"
    ] * 2
    assert "8 patients" not in (tmp_path / "summary.md").read_text()
    with pytest.raises(ConfigError, match=r"2 configurations \(model=unet; model=unetpp\)"):
        sweep_jobs(tmp_path)
    with caplog.at_level("INFO", logger="brainseg"):
        chosen = sweep_jobs(tmp_path, "best")
    best = report["configurations"][0]["configuration"]
    assert chosen == [tmp_path / "0", tmp_path / "1"] and best == "model=unet"
    assert f"pick=best: {best}, jobs 0, 1 (sweep report: {best} has the highest" in caplog.text
    assert "but this sweep cannot compare configurations scored on fewer than 6" in caplog.text
    assert report["best"] is None


@pytest.mark.slow
def test_the_report_is_logged_as_one_offline_wandb_run_in_the_sweep_group(
    kfold_sweep: Path, monkeypatch, caplog
) -> None:
    from helpers import read_wandb_records

    from brainseg.tracking import log_sweep_report

    monkeypatch.setenv("WANDB_API_KEY", "")
    settings = {"project": "brainseg", "group": "sweep-x", "offline": "auto"}
    with caplog.at_level("INFO", logger="brainseg"):
        run_dir = log_sweep_report(kfold_sweep, write_report(kfold_sweep), settings)
    assert f"upload it with: wandb sync {run_dir}" in caplog.text  # before: not said
    (run_file,) = run_dir.glob("run-*.wandb")
    assert run_dir.parent == kfold_sweep / "wandb" and run_dir.name.startswith("offline-run-")
    run = next(r.run for r in read_wandb_records(run_file) if r.WhichOneof("record_type") == "run")
    assert run.run_group == "sweep-x" and run.job_type == "sweep-report"
    (table,) = run_dir.glob("files/media/table/sweep/comparison_*.table.json")
    data = json.loads(table.read_text())
    verdict = data["columns"].index("verdict")
    assert [row[verdict] for row in data["data"]] == ["reference", "worse"]
    assert len(list(run_dir.glob("files/media/images/sweep/*.png"))) == 2
    assert _summary(read_wandb_records(run_file))["best_configuration"] == "model=unetpp"
    # two patients: the report cannot compare, so the run names no best configuration
    small = kfold_sweep / "small"
    for number, model in enumerate(("unet", "unetpp")):
        _job(small, number, [f"model={model}"], PATIENTS[:2], dict.fromkeys(PATIENTS, 0.5))
    (small_file,) = log_sweep_report(small, write_report(small), settings).glob("run-*.wandb")
    summary = _summary(read_wandb_records(small_file))
    assert "best_configuration" not in summary and "cannot compare" in summary["verdict"]


def _summary(records: list) -> dict:
    return {
        i.key: json.loads(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for i in r.summary.update
    }


def test_sweep_figures_show_every_configuration_and_patient_name_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2x2 sweep with a long extra override and TCGA-length patient names: every tick label of
    summary.png and heatmap.png lies inside its figure, and the labels tell the jobs apart."""
    patients = [f"TCGA_HT_{8100 + i}_19980331" for i in range(6)]
    dice = dict(zip(patients, np.linspace(0.3, 0.8, len(patients))))
    number = 0
    for model in ("unet", "unetpp"):
        for loss in ("dice", "bce_dice"):
            extra = f"data.augmentation.rotate_degrees={number}"
            _job(tmp_path, number, [f"model={model}", f"loss={loss}", extra], patients, dice)
            number += 1
    labels: dict[str, list[str]] = {}
    save = figures._save

    def check_then_save(fig, path: Path) -> Path:
        fig.draw_without_rendering()
        box = fig.bbox
        ax = fig.axes[0]
        labels[path.name] = [t.get_text() for t in ax.get_yticklabels()]
        for text in [*ax.get_yticklabels(), *ax.get_xticklabels(), ax.title]:
            extent = text.get_window_extent()
            assert extent.x0 >= box.x0 and extent.x1 <= box.x1 + 0.5, (
                f"{path.name}: {text.get_text()!r} clipped"
            )  # before: cut off at the left
            assert extent.y0 >= box.y0 and extent.y1 <= box.y1 + 0.5, f"{path.name}: {text}"
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", check_then_save)
    report = write_report(tmp_path)
    configurations = {r["configuration"] for r in report["configurations"]}
    assert (
        len(configurations) == 4
        and {
            "data.augmentation.rotate_degrees=0 loss=dice model=unet",
            "data.augmentation.rotate_degrees=1 loss=bce_dice model=unet",
        }
        <= configurations
    )
    for name in ("summary.png", "heatmap.png"):
        shown = {label.replace("\n", " ") for label in labels[name]}
        assert shown == configurations  # wrapped between overrides, nothing dropped


def test_decimal_overrides_are_shortened_but_stay_distinct(tmp_path: Path) -> None:
    for number, lr in enumerate(("0.0012345678901", "0.0012349", "0.1")):
        _job(tmp_path, number, [f"optimizer.lr={lr}"], PATIENTS[:3], dict.fromkeys(PATIENTS, 0.5))
    report = write_report(tmp_path)
    assert sorted(r["configuration"] for r in report["configurations"]) == [
        "optimizer.lr=0.0012346",
        "optimizer.lr=0.0012349",
        "optimizer.lr=0.1",
    ]  # before: the full 14-digit value


def test_a_sweep_on_two_patients_says_it_cannot_compare(tmp_path: Path) -> None:
    for number, (model, shift) in enumerate((("unet", 0.0), ("unetpp", 0.2))):
        _job(
            tmp_path,
            number,
            [f"model={model}"],
            PATIENTS[:2],
            {"P00": 0.5 + shift, "P01": 0.6 + shift},
        )
    report = write_report(tmp_path)
    assert report["configurations"][1]["p"] is None
    summary = (tmp_path / "summary.md").read_text()
    assert "but this sweep cannot compare configurations scored on fewer than 6 patients" in summary
    rows = [
        line for line in summary.split("## Configurations")[1].splitlines() if "| model=" in line
    ]
    assert len(rows) == 2 and not any("[" in row for row in rows)  # before: [0.7000, 0.8000]
    assert (
        "| model=unet | last | 1 | 2 | – | 0.5500 – | 0.5500 | -0.2000 – | – | – | too few"
        in rows[1]
    )
    assert report["best"] is None and "cannot compare" in report["verdict"]


def test_inner_validation_folds_pool_the_held_out_test_scores(tmp_path: Path) -> None:
    """Rule inner_val: each fold's validation patients (drawn from its training patients) only
    chose the checkpoint; the report pools the held-out patients' test scores and names the rule."""
    truth = dict(zip(PATIENTS, np.linspace(0.3, 0.8, len(PATIENTS))))
    for fold in range(3):
        job = _job(tmp_path, fold, [f"data.split.fold={fold}"], PATIENTS[fold::3], truth)
        held_out = PATIENTS[fold::3]
        inner = [p for p in PATIENTS if p not in held_out][:2]
        write_split(job, SplitFile("k_fold", [], inner, held_out, n_inner_val=2))
        metrics = read_metrics(job)
        metrics.selected.scores.per_patient = {p: 1.0 for p in inner}  # must not be pooled
        metrics.test = TestScores(
            rule="inner_val",
            epoch=3,
            values={
                "test/dsc_volume": float(np.mean([truth[p] for p in held_out])),
                "test/dsc_volume_median": 0.0,
            },
            per_patient={p: truth[p] for p in held_out},
            per_patient_metrics={p: {"dsc": truth[p], "hd95": 1.0} for p in held_out},
            checkpoint=str(job / "checkpoints" / "best.ckpt"),
        )
        write_metrics(job, metrics)
    report = write_report(tmp_path)
    rows = report["per_patient"]
    assert sorted(r["patient"] for r in rows) == PATIENTS
    assert all(r["dsc"] == truth[r["patient"]] and r["selection"] == "inner_val" for r in rows)
    (pooled,) = report["configurations"]
    assert pooled["n"] == 9 and pooled["mean"] == pytest.approx(np.mean(list(truth.values())))
    summary = (tmp_path / "summary.md").read_text()
    assert "| all folds | inner_val | 3 | 9 |" in summary
    assert "3 jobs: 3 done. Rule `inner_val`: `test/dsc_volume` on the held-out" in summary
    assert "`inner_val` = checkpoint with the best Dice on data.split.n_inner_val" in summary


def test_a_tag_in_a_jobs_overrides_is_one_line_and_never_run(tmp_path: Path, capsys) -> None:
    from brainseg.reporting.sweep import main

    marker = tmp_path / "ran"
    hydra = tmp_path / "0" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(f"- !!python/object/apply:os.system ['touch {marker}']\n")
    assert main([str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {hydra / 'overrides.yaml'}: not a list of overrides")
    assert not marker.exists()


def test_the_report_shows_the_worst_patients_of_the_first_configuration(kfold_sweep: Path) -> None:
    for job in kfold_sweep.iterdir():  # as each job's final validation draws them
        if job.is_dir():
            (job / figures.FAILURES_FILE).write_bytes(b"\x89PNG")
    report = write_report(kfold_sweep)
    assert report["configurations"][0]["configuration"] == "model=unetpp"  # jobs 3, 4 and 5
    markdown = (kfold_sweep / "summary.md").read_text()
    gallery = markdown.split("## The worst patients of model=unetpp\n", 1)[1]
    links = [line for line in gallery.splitlines() if line.startswith("![")]
    assert links == [f"![job {n}]({n}/failures.png)" for n in (3, 4, 5)]
