"""Sweeps end to end: the README's sweep line with W&B offline, k-fold CV, failed jobs,
the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import PROJECT, compose, read_wandb_records, run_cli, tiny_train_overrides

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


@pytest.fixture(scope="module")
def wandb_sweep(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train.py -m model=unet,unetpp loss=dice,bce_dice` with W&B in offline mode
    (no credentials)."""
    base = tmp_path_factory.mktemp("sweep")
    home = base / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": ""}
    result = _sweep(
        synthetic_root,
        base / "sweep",
        "model=unet,unetpp",
        "loss=dice,bce_dice",
        "logger=[csv,tensorboard,wandb]",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "sweep"


def test_every_combination_runs_and_the_report_lists_it(wandb_sweep: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open(wandb_sweep / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["overrides"] for r in rows) == sorted(
        f"loss={loss} model={model}"
        for model in ("unet", "unetpp")
        for loss in ("dice", "bce_dice")
    )
    for row in rows:
        metrics = read_metrics(wandb_sweep / row["job"])
        # one headline: the report's row, metrics.json, TensorBoard's hp_metric, the CSV log
        assert row["status"] == "done" and float(row["val/dsc_volume"]) == pytest.approx(
            metrics.headline
        )
        assert metrics.headline == metrics.selected.scores.dsc_volume_mean
        events = EventAccumulator(str(wandb_sweep / row["job"] / "tensorboard"))
        events.Reload()
        assert events.Scalars("hp_metric")[-1].value == pytest.approx(metrics.headline)
        with open(wandb_sweep / row["job"] / "csv" / "metrics.csv") as fh:
            logged = [r["reported/dsc_volume"] for r in csv.DictReader(fh)]
        assert [float(v) for v in logged if v] == pytest.approx([metrics.headline])
        assert (
            row["epoch"] == "1" and row["selection"] == "last" and float(row["train_seconds"]) > 0
        )
    report = (wandb_sweep / "summary.md").read_text()
    assert "4 jobs: 4 done." in report and "| loss=bce_dice model=unetpp |" in report
    assert report.count("| reference |") == 1 and "## Configurations" in report
    assert (wandb_sweep / "summary.png").stat().st_size > 5000 and (
        wandb_sweep / "heatmap.png"
    ).stat().st_size > 5000


def test_wandb_offline_runs_hold_the_per_volume_dice(wandb_sweep: Path) -> None:
    for job in sorted(p for p in wandb_sweep.iterdir() if (p / "metrics.json").exists()):
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        records = read_wandb_records(run_file)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.run_group == f"sweep-{wandb_sweep.name}" and "loss=" in run.display_name
        assert "trainer.max_epochs=1" in run.tags and not any("loss=" in t for t in run.tags)
        logged = [
            float(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
            if (item.key or "/".join(item.nested_key)) == "val/dsc_volume"
        ]
        metrics = read_metrics(job)
        assert logged == pytest.approx([h.dsc_volume_mean for h in metrics.history])
        config_keys = {
            u.key or "/".join(u.nested_key)
            for r in records
            if r.WhichOneof("record_type") == "config"
            for u in r.config.update
        }
        assert {"data", "model", "loss", "optimizer"} <= config_keys
        (table,) = run_file.parent.glob("files/media/table/val/dsc_volume_per_patient_*.table.json")
        data = json.loads(table.read_text())
        assert dict(data["data"]) == pytest.approx(metrics.best.per_patient)
        assert list(run_file.parent.glob("files/media/images/val/overlays_*.png"))
        headline = [
            float(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
            if (item.key or "/".join(item.nested_key)) == "reported/dsc_volume"
        ]
        assert headline == [metrics.headline]
        assert {"sweep/model", "sweep/loss"} <= config_keys
    (report_run,) = wandb_sweep.glob("wandb/offline-run-*/run-*.wandb")
    run = next(
        r.run for r in read_wandb_records(report_run) if r.WhichOneof("record_type") == "run"
    )
    assert run.run_group == f"sweep-{wandb_sweep.name}" and run.job_type == "sweep-report"


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
    # the one out-of-fold figure: predict.py sweep_dir= (pick=best: the sweep's one configuration)
    # gives each patient the Dice, and every other metric, that the report pools
    with caplog.at_level("INFO", logger="brainseg"):
        predicted = predict(
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
    assert "pick=best: all folds, jobs 0, 1 (sweep report: all folds has the highest" in caplog.text
    assert len(predicted["members"]) == 2
    with open(tmp_path / "oof" / "dsc.csv") as fh:
        scored = {r["patient"]: r for r in csv.DictReader(fh)}
    assert sorted(scored) == sorted(pooled) and {r["subset"] for r in scored.values()} == {"val"}
    for name, row in scored.items():
        for metric in ("dsc", "hd95", "nsd", "lesions_found"):
            assert float(row[metric]) == pytest.approx(float(pooled[name][metric]), abs=1e-6)


def _best_value(sweep: Path) -> float:
    """The best value in the sweep's Optuna study (its journal file)."""
    import optuna

    from hydra_plugins.brainseg_sweeper._study import open_storage

    return optuna.load_study(study_name="brainseg", storage=open_storage(None, sweep)).best_value


def test_optuna_search_returns_the_best_trial(synthetic_root: Path, tmp_path: Path) -> None:
    """With a lower-is-better monitor, Optuna minimises the value train.py returns: each trial's
    headline (val/hd95 of the reported epoch in the original geometry)."""
    sweep = tmp_path / "optuna"
    result = _sweep(
        synthetic_root,
        sweep,
        "hparams_search=optuna",
        "monitor=val/hd95",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-4, 1e-2))', "
        "loss: 'choice(dice, focal)'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _best_value(sweep) == min(read_metrics(sweep / str(k)).headline for k in range(2))


def test_optuna_failed_trial_says_why_and_the_study_goes_on(
    synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "optuna_failure"
    # The seeded sampler draws data.split.n_val=2, then 99 (more than the 6 patients): one trial
    # fails.
    result = _sweep(
        synthetic_root,
        sweep,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=10",
        "hydra.sweeper.params={optimizer.lr: 'choice(1e-3)', loss: 'choice(dice)', "
        "model.arch: 'choice(unet)'}",
        "data.split.n_val=choice(2, 99)",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "float-castable" not in output, output[-3000:]
    (failed,) = [k for k in range(2) if read_failure(sweep / str(k))]
    assert (
        failed == 1
        and (
            "data.split.n_val=99) failed: ConfigError: "
            "data.split.kind=reference needs more than data.split.n_val=99"
        )
        in output
    )
    assert (
        "Failed experiment: data.split.kind=reference needs more than data.split.n_val=99" in output
    )  # Optuna's own line
    ok = read_metrics(sweep / str(1 - failed)).headline
    assert _best_value(sweep) == ok


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
