"""End-to-end: `python train.py` on tiny synthetic data, resume,
and one-line errors for bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from helpers import PROJECT, compose, run_cli, tiny_train_overrides

from brainseg.runfiles import read_metrics, read_split

pytestmark = pytest.mark.slow


def test_a_redirected_run_prints_one_line_per_epoch_and_draws_curves(tiny_run: Path) -> None:
    console = (tiny_run.parent / "console.txt").read_text()
    metrics = read_metrics(tiny_run)
    for text in (console, (tiny_run / "train.log").read_text()):
        lines = [line for line in text.splitlines() if "| train loss" in line]
        assert [line.split(" | ")[0].split(" - ")[-1] for line in lines] == [
            "epoch 1/2",
            "epoch 2/2",
        ]
        last, best = metrics.history[-1], metrics.best
        assert (
            f"val Dice (training grid) mean {last.dsc_volume_mean:.4f} median "
            f"{last.dsc_volume_median:.4f}" in lines[-1]
        )
        assert (
            f"best_on_val/dsc_volume {best.dsc_volume_mean:.4f} (epoch {best.epoch})" in lines[-1]
        )
        assert "s/epoch | ETA" in lines[0]
    for noise in ("was configured so", "💡 Tip", "Total FLOPs", "LeafSpec", "setup plugin alembic"):
        assert noise not in console, noise
    assert not any(line.startswith("INFO: ") for line in console.splitlines()), (
        "Lightning lines printed twice"
    )
    assert (tiny_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert all(h.train_loss > 0 and h.value("val/loss") > 0 for h in metrics.history)


def test_help_and_cfg_import_neither_torch_nor_lightning(tmp_path: Path) -> None:
    """`--help` and `--cfg` answer without the heavy imports (they took ~25 s before)."""
    for args in (["--help"], ["--cfg", "job"]):
        result = run_cli("-X", "importtime", "train.py", *args, cwd=PROJECT)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {
            line.split("|")[-1].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert not imported & {"torch", "lightning", "segmentation_models_pytorch", "wandb"}, args


def test_help_lists_the_launchers_with_the_config_groups() -> None:
    """`--help` lists hydra/launcher beside the app's groups (Hydra's template leaves it out)."""
    result = run_cli("train.py", "--help", cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-2000:]
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    (line,) = [ln for ln in groups.splitlines() if ln.startswith("hydra/launcher: ")]
    listed = line.removeprefix("hydra/launcher: ").split(" (")[0].split(", ")
    on_disk = {p.stem for p in (PROJECT / "conf" / "hydra" / "launcher").glob("*.yaml")}
    assert on_disk <= set(listed) and "brainseg_basic" in listed
    for launcher in listed:  # each one a launcher a sweep can be given
        assert compose([f"hydra/launcher={launcher}"]).hydra.launcher._target_


def test_console_files_and_checkpoint_name_number_epochs_alike(tiny_run: Path) -> None:
    """Epochs count from 1 in the per-epoch lines, the final lines, the best checkpoint's name,
    and metrics.json."""
    console = (tiny_run.parent / "console.txt").read_text()
    metrics = read_metrics(tiny_run)
    best, reported = metrics.best, metrics.selected.scores
    assert (
        f"(epoch {best.epoch})" in [ln for ln in console.splitlines() if "| train loss" in ln][-1]
    )
    assert f"best_on_val/dsc_volume {best.dsc_volume_mean:.4f} (epoch {best.epoch}," in console
    assert f"reported/dsc_volume {metrics.headline:.4f} (evaluation.selection=last" in console
    assert f"; epoch {reported.epoch}, original (every slice" in console
    assert reported.epoch == metrics.epochs == 2  # selection=last: the second and last epoch
    (suggested,) = [ln.split("next: ", 1)[1] for ln in console.splitlines() if "next: " in ln]
    settings = dict(word.split("=", 1) for word in suggested.split()[2:])
    assert suggested.startswith("python predict.py ") and set(settings) == {
        "input",
        "checkpoints",
        "output_dir",
    }
    checkpoint = Path(settings["checkpoints"])
    assert checkpoint == Path(metrics.selected.checkpoint) and checkpoint.is_file()
    assert Path(metrics.best_checkpoint).name.startswith(f"best-epoch{best.epoch:03d}-dsc_volume_")


def test_run_directory_holds_checkpoints_metrics_split_config(tiny_run: Path) -> None:
    run = tiny_run
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(n.startswith("best-epoch") for n in checkpoints)
    metrics, split = read_metrics(run), read_split(run)
    best = metrics.best
    assert metrics.monitor == "val/dsc_volume" and metrics.epochs == 2
    assert sorted(best.per_patient) == sorted(split.val) and len(split.val) == 2
    values = list(best.per_patient.values())
    assert best.dsc_volume_mean == pytest.approx(sum(values) / len(values), abs=1e-6)
    assert best.dsc_volume_mean == max(h.dsc_volume_mean for h in metrics.history)
    assert [h.epoch for h in metrics.history] == [1, 2]
    assert Path(metrics.best_checkpoint).exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["arch"] == "unet" and config["data"]["root"].endswith("lgg")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["brainseg"]["preprocess"]["image_size"] == 32
    assert checkpoint["brainseg"]["split"]["val"] == split.val
    with open(run / "csv" / "metrics.csv") as fh:
        columns = next(csv.reader(fh))
    assert {"train/loss", "val/dsc_volume", "val/dsc_volume_median", "val/dsc_slice"} <= set(
        columns
    )


def test_resume_from_last_checkpoint(tiny_run: Path, synthetic_root: Path, tmp_path: Path) -> None:
    overrides = tiny_train_overrides(
        synthetic_root, tmp_path / "resumed", tiny_run.parent / "cache"
    )
    overrides = [o for o in overrides if not o.startswith("trainer.max_epochs")]
    last = tiny_run / "checkpoints" / "last.ckpt"
    result = run_cli(
        "train.py", *overrides, "trainer.max_epochs=3", f"ckpt_path={last}", cwd=PROJECT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "resumed")
    assert metrics.epochs == 3
    assert [h.epoch for h in metrics.history] == [1, 2, 3]  # the first two from the checkpoint
    with open(tmp_path / "resumed" / "csv" / "metrics.csv") as fh:
        epochs = {row["epoch"] for row in csv.DictReader(fh) if row.get("train/loss")}
    assert epochs == {"3"}  # only the new epoch was trained


def test_rerun_in_the_same_directory_resumes(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """What a requeued SLURM job does: same run directory, so it continues from its last.ckpt."""
    import shutil

    run = tmp_path / "requeued"
    shutil.copytree(tiny_run, run)
    overrides = tiny_train_overrides(synthetic_root, run, tiny_run.parent / "cache")
    result = run_cli("train.py", *overrides, "trainer.max_epochs=3", cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout + result.stderr
    assert [h.epoch for h in read_metrics(run).history] == [1, 2, 3]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.root=does/not/exist"], "does/not/exist: data root does not exist"),
        (
            ["data.split.kind=kfold", "data.split.fold=5", "data.split.n_folds=5"],
            "data.split.fold=5 must be in [0, data.split.n_folds=5)",
        ),
        (["model.arch=unett"], "model.arch='unett' is unknown; choose one of ["),
    ],
)
def test_bad_settings_give_one_line_errors(
    synthetic_root: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    args = tiny_train_overrides(synthetic_root, tmp_path / "run", tmp_path / "cache")
    result = run_cli("train.py", *args, *overrides, cwd=PROJECT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last


def test_a_data_root_without_patients_stops_a_run_before_its_directory_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before, train.py noticed only after building the model, leaving a run directory behind
    that looked like a real run."""
    from brainseg.hydra_callbacks import RefuseOutputDirectory

    run, empty = tmp_path / "run", tmp_path / "empty"
    empty.mkdir()
    for root, problem in [
        (tmp_path / "missing", "data root does not exist"),
        (empty, "no patient folders with .tif slices (expected the kaggle_3m layout)"),
    ]:
        config = compose(tiny_train_overrides(root, run, tmp_path / "cache"))
        with pytest.raises(SystemExit) as stopped:
            RefuseOutputDirectory().on_run_start(config)
        assert stopped.value.code == 2
        assert capsys.readouterr().err == f"error: {root}: {problem}\n"
    assert not run.exists()


def test_unknown_config_group_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli("train.py", "loss=dise", f"hydra.run.dir={tmp_path}", cwd=PROJECT)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'loss/dise'" in result.stderr and "bce_dice" in result.stderr


def _stop_at_first_epoch(args: list[str], last: Path, stderr: Path) -> tuple[int, list[str]]:
    """Start train.py, send SIGTERM once it has logged its first epoch and saved `last`; its exit
    status and the `error:` lines it printed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "train.py", *args],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        deadline = time.monotonic() + 300  # only bounds a failure
        try:
            for line in process.stdout:
                if "epoch 1/" in line or time.monotonic() > deadline:
                    break
            while not last.is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=300)
        finally:
            process.kill()
    return process.returncode, [x for x in stderr.read_text().splitlines() if "error:" in x]


def test_sigterm_stops_a_run_non_zero_saying_how_to_resume(
    synthetic_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = tiny_train_overrides(synthetic_root, run, tmp_path / "cache")
    last = run / "checkpoints" / "last.ckpt"
    status, errors = _stop_at_first_epoch([*args, "trainer.max_epochs=50"], last, tmp_path / "err")
    assert status == 143, errors  # before: 0, as if the run had finished
    assert errors == [
        f"error: stopped by SIGTERM; run the same command again to resume from {last} (auto_resume)"
    ]
    assert 1 <= read_metrics(run).epochs < 50  # the epochs so far


def test_sigterm_stops_a_sweep_after_its_report(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        o
        for o in tiny_train_overrides(synthetic_root, tmp_path / "run", tmp_path / "cache")
        if not o.startswith("hydra.run.dir")
    ]
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    status, errors = _stop_at_first_epoch(
        ["-m", *args, f"hydra.sweep.dir={sweep}", "trainer.max_epochs=50", "seed=1,2"],
        last,
        tmp_path / "err",
    )
    assert status == 143, errors  # before: 0, and the sweep went on with job 1
    resume = f"resume with ckpt_path={last}"
    assert errors == [
        f"error: job 0 stopped by SIGTERM; {resume}; the jobs run so far: {sweep / 'summary.md'}"
    ]
    assert (sweep / "summary.md").is_file() and not (sweep / "1").exists()
