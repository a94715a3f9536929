"""Sweeps end to end: one figure per job and per configuration in every output of a 2-fold
cross-validation of a 2x2 Optuna search with every logger; k-fold CV with a failed job; Optuna's
direction and failures; mistakes caught before the first job; one job per GPU."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import matplotlib
import pytest
from helpers import (
    PROJECT,
    compose,
    read_wandb_records,
    run_cli,
    sweep_study,
    tiny_train_overrides,
    wandb_history_and_summary,
)

from brainseg.prediction.pipeline import predict
from brainseg.reporting.sweep import main as rebuild_report
from brainseg.runfiles import read_failure, read_metrics

pytestmark = pytest.mark.slow


def _sweep(synthetic_root: Path, sweep_dir: Path, *overrides: str, env: dict | None = None):
    given = tuple(o.split("=", 1)[0] + "=" for o in overrides)
    base = [
        o
        for o in tiny_train_overrides(synthetic_root, sweep_dir, sweep_dir.parent / "cache")
        if not o.startswith(("hydra.run.dir", *given))
    ]
    return run_cli(
        "train.py",
        "-m",
        *base,
        f"hydra.sweep.dir={sweep_dir}",
        "trainer.max_epochs=1",
        *overrides,
        cwd=PROJECT,
        env=env,
    )


# An Optuna search that tries every combination of its choices once
BRUTE_FORCE = (
    "hparams_search=optuna",
    "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
    "~hydra.sweeper.sampler.n_startup_trials",
)


@pytest.fixture(scope="module")
def search(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-fold cross-validation of a 2x2 configuration sweep (model.arch unet, unetpp x loss
    dice, bce_dice) run as an Optuna search, with the CSV, TensorBoard and offline W&B loggers
    (no credentials)."""
    base = tmp_path_factory.mktemp("search")
    home = base / "home"
    home.mkdir()
    # a new HOME (no W&B credentials) keeps matplotlib's font cache: its rebuild takes seconds
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": ""}
    env["MPLCONFIGDIR"] = matplotlib.get_cachedir()
    result = _sweep(
        synthetic_root,
        base / "sweep",
        *BRUTE_FORCE,
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.params={optimizer.lr: 'choice(0.001)', loss: 'choice(dice, bce_dice)', "
        "model.arch: 'choice(unet, unetpp)'}",
        "data.split.fold=choice(0, 1)",
        "data.split.kind=kfold",
        "data.split.n_folds=2",
        "logger=[csv,tensorboard,wandb]",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "sweep", result.stdout + result.stderr


def test_one_figure_per_job_in_every_output_of_the_search(search) -> None:
    """Each trial's headline (its reported epoch, original geometry, decided post-processing) is
    the figure of the console line, metrics.json, the report, TensorBoard's hp_metric, the CSV
    log, W&B's chart and summary, and the study's trial value (train.py's return value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep, console = search
    study = sweep_study(sweep)
    trials = study.trials
    assert len(trials) == 8 and len({tuple(sorted(t.params.items())) for t in trials}) == 8
    with open(sweep / "summary.csv") as fh:
        rows = {r["job"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == [str(t.number) for t in trials]
    logged = [float(v) for v in re.findall(r"reported/dsc_volume (\S+) \(", console)]
    for trial in trials:
        job = sweep / str(trial.number)
        metrics = read_metrics(job)
        headline = metrics.headline
        assert trial.value == headline  # the objective is train.py's return value
        assert float(rows[job.name]["val/dsc_volume"]) == pytest.approx(headline)
        assert logged[trial.number] == pytest.approx(headline, abs=5e-5)
        events = EventAccumulator(str(job / "tensorboard"))
        events.Reload()
        assert events.Scalars("hp_metric")[-1].value == pytest.approx(headline)
        with open(job / "csv" / "metrics.csv") as fh:
            csv_logged = [r["reported/dsc_volume"] for r in csv.DictReader(fh)]
        assert [float(v) for v in csv_logged if v] == pytest.approx([headline])
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        history, summary = wandb_history_and_summary(run_file)
        assert [r["reported/dsc_volume"] for r in history if "reported/dsc_volume" in r] == [
            headline
        ]
        assert summary["reported/dsc_volume"] == headline  # the chart's last point
        run = next(
            r.run for r in read_wandb_records(run_file) if r.WhichOneof("record_type") == "run"
        )
        assert run.run_group == f"sweep-{sweep.name}" and "loss=" in run.display_name
        assert [r["val/dsc_volume"] for r in history if "val/dsc_volume" in r] == pytest.approx(
            [h.dsc_volume_mean for h in metrics.history]
        )
        (table,) = run_file.parent.glob("files/media/table/val/dsc_volume_per_patient_*.table.json")
        assert dict(json.loads(table.read_text())["data"]) == pytest.approx(
            metrics.best.per_patient
        )
        assert list(run_file.parent.glob("files/media/images/val/overlays_*.png"))
    assert study.best_value == max(t.value for t in trials)


def test_one_out_of_fold_figure_per_configuration_in_the_report_wandb_and_predict(
    search, synthetic_root: Path, tmp_path: Path, caplog
) -> None:
    """A configuration's figure is its folds' patients pooled out of fold: the report's
    comparison row, its W&B sweep-report run, and predict.py `sweep_dir= pick=best` patient by
    patient; the four configurations are never pooled together."""
    sweep, _ = search
    with open(sweep / "comparison.csv") as fh:
        compared = {r["configuration"]: r for r in csv.DictReader(fh)}
    assert sorted(compared) == sorted(
        f"loss={loss} model.arch={arch}"
        for arch in ("unet", "unetpp")
        for loss in ("dice", "bce_dice")
    )
    with open(sweep / "per_patient.csv") as fh:
        pooled = list(csv.DictReader(fh))
    patients = sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())
    for name, row in compared.items():
        scored = {r["patient"]: float(r["dsc"]) for r in pooled if r["configuration"] == name}
        assert sorted(scored) == patients and row["jobs"] == "2" and row["n"] == str(len(patients))
        assert float(row["mean"]) == pytest.approx(sum(scored.values()) / len(scored))
    report = (sweep / "summary.md").read_text()
    assert "8 jobs: 8 done." in report and "decided on the 6 patients of its folds pooled" in report
    (report_run,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_records(report_run)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == f"sweep-{sweep.name}" and run.job_type == "sweep-report"
    (table,) = report_run.parent.glob("files/media/table/sweep/comparison_*.table.json")
    data = json.loads(table.read_text())
    at = data["columns"].index
    assert {r[at("configuration")]: r[at("mean")] for r in data["data"]} == pytest.approx(
        {name: float(row["mean"]) for name, row in compared.items()}
    )
    with caplog.at_level("INFO", logger="brainseg"):
        predict(
            compose(
                [
                    *("progress=false", "figures.overlays=false", "pick=best"),
                    f"input={synthetic_root}",
                    f"sweep_dir={sweep}",
                    f"output_dir={tmp_path / 'oof'}",
                ],
                hydra_node=False,
                config_name="predict",
            )
        )
    best = next(iter(compared))  # comparison.csv lists the best configuration first
    assert f"pick=best: {best}, jobs " in caplog.text
    with open(tmp_path / "oof" / "dsc.csv") as fh:
        predicted = {r["patient"]: r for r in csv.DictReader(fh)}
    assert sorted(predicted) == patients and {r["subset"] for r in predicted.values()} == {"val"}
    for row in (r for r in pooled if r["configuration"] == best):
        for metric in ("dsc", "hd95", "nsd", "lesions_found"):
            assert float(predicted[row["patient"]][metric]) == pytest.approx(
                float(row[metric]), abs=1e-6
            )


def test_kfold_sweep_reports_cv_mean_and_failed_jobs(
    synthetic_root: Path, tmp_path: Path, caplog
) -> None:
    sweep = tmp_path / "kfold"
    result = _sweep(
        synthetic_root,
        sweep,
        "data.split.kind=kfold",
        "data.split.n_folds=2",
        "data.split.fold=0,1,2",
    )
    assert result.returncode == 1, result.stderr[
        -3000:
    ]  # the other jobs went on, the failure is loud
    assert "error: data.split.fold=2 must be in [0, data.split.n_folds=2)" in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1] == f"1 of 3 jobs failed: see {sweep / 'summary.md'}"
    )
    with open(sweep / "summary.csv") as fh:
        rows = {r["overrides"]: r for r in csv.DictReader(fh)}
    assert (
        rows["data.split.fold=2"]["status"] == "failed"
        and "data.split.fold=2" in rows["data.split.fold=2"]["error"]
    )
    report = (sweep / "summary.md").read_text()
    assert (
        "3 jobs: 2 done, 1 failed." in report
        and "cross-validation: every patient scored by the fold that held it out" in report
    )
    with open(sweep / "per_patient.csv") as fh:
        pooled = {r["patient"]: r for r in csv.DictReader(fh)}
    assert sorted(pooled) == sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())
    for row in pooled.values():  # each patient is scored by the fold that held it out
        assert row["patient"] in read_metrics(sweep / row["job"]).selected.scores.per_patient
        assert row["fold"] == row["job"] and float(row["hd95"]) >= 0
    pooled_mean = sum(float(r["dsc"]) for r in pooled.values()) / len(pooled)
    assert "| all folds | last | 2 | 6 | " in report and f"| {pooled_mean:.4f} [" in report
    assert "decided on the 6 patients of its folds pooled |" in report
    (sweep / "summary.md").unlink()
    assert rebuild_report([str(sweep)]) == 0 and (sweep / "summary.md").read_text() == report


def test_optuna_minimises_a_lower_is_better_headline_and_a_failed_trial_says_why(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """With val/hd95 as the monitor, Optuna minimises the value train.py returns (each trial's
    headline); a trial that fails says why, in the sweep's words and Optuna's, and the study goes
    on."""
    sweep = tmp_path / "optuna"
    result = _sweep(
        synthetic_root,
        sweep,
        *BRUTE_FORCE,
        "monitor=val/hd95",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.params={optimizer.lr: 'choice(0.001)', loss: 'choice(dice)', "
        "model.arch: 'choice(unet)'}",
        "data.split.n_val=choice(2, 3, 99)",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "float-castable" not in output, output[-3000:]
    failed = [k for k in range(3) if read_failure(sweep / str(k))]
    overrides = (sweep / str(failed[0]) / ".hydra" / "overrides.yaml").read_text()
    assert len(failed) == 1 and "data.split.n_val=99" in overrides
    assert (
        "data.split.n_val=99) failed: ConfigError: "
        "data.split.kind=reference needs more than data.split.n_val=99"
    ) in output
    assert (
        "Failed experiment: data.split.kind=reference needs more than data.split.n_val=99" in output
    )  # Optuna's own line
    scores = [read_metrics(sweep / str(k)).headline for k in range(3) if k not in failed]
    assert len(scores) == 2
    assert sweep_study(sweep).best_value == min(scores)


@pytest.mark.parametrize("mistake", ["missing data root", "unknown loss term"])
def test_a_mistake_every_job_shares_stops_the_sweep_before_its_first_job(
    synthetic_root: Path, tmp_path: Path, mistake: str
) -> None:
    sweep = tmp_path / "sweep"
    if mistake == "missing data root":
        result = _sweep(tmp_path / "missing", sweep, "loss=dice,bce_dice")
        expected = f"{tmp_path / 'missing'}: data root does not exist"
    else:
        result = _sweep(synthetic_root, sweep, "optimizer.lr=0.001,0.0001", "+loss.terms.nope=1.0")
        expected = (
            "loss 'nope' is unknown; choose from "
            "['bce', 'dice', 'focal', 'jaccard', 'lovasz', 'tversky'] or give a _target_"
        )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {expected} (checked before the sweep started; no job was run)"]
    assert not (sweep / "0").exists()


def test_local_launcher_runs_one_job_per_gpu_of_its_pool(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """3 jobs on a pool of 2 GPUs (forced: the jobs train on the CPU) run 2 at a time, each job
    in its own process seeing its own GPU, and the third takes the GPU freed first."""
    sweep = tmp_path / "local"
    result = _sweep(
        synthetic_root,
        sweep,
        "hydra/launcher=local",
        "hydra.launcher.gpus=[0,1]",
        "optimizer.lr=0.001,0.002,0.003",
        "+callbacks.probe._target_=tests.job_probe.JobProbe",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 jobs: 3 done." in (sweep / "summary.md").read_text()
    probes = [json.loads((sweep / str(k) / "probe.json").read_text()) for k in range(3)]
    assert len({p["pid"] for p in probes}) == 3
    devices = [p["cuda_visible_devices"] for p in probes]
    assert sorted(devices[:2]) == ["0", "1"] and devices[2] in ("0", "1")
    for probe in probes:  # at most 2 processes at once, never 2 on one GPU
        overlapping = [p for p in probes if p["start"] < probe["end"] and probe["start"] < p["end"]]
        assert len(overlapping) <= 2
        assert [p["cuda_visible_devices"] for p in overlapping].count(
            probe["cuda_visible_devices"]
        ) == 1
    assert max(p["start"] for p in probes[:2]) < min(p["end"] for p in probes[:2])  # 2 at once
