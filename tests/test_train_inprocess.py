"""The training pipeline in-process: optimizers, schedulers, precision pass-through, error lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import compose_run

from brainseg.checkpoint import read_checkpoint
from brainseg.cli import run_task
from brainseg.training.module import SegmentationModule
from brainseg.training.pipeline import train

pytestmark = pytest.mark.slow


def _lr_by_epoch(run: Path) -> list[float]:
    with open(run / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    column = next(c for c in rows[0] if c.startswith("lr-"))
    return [float(r[column]) for r in rows if r.get(column)]


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "precision", "lr_changes"),
    [
        ("adamw", "cosine", "32-true", True),
        ("sgd", "plateau", "32-true", False),
        ("adam", "onecycle", "bf16-mixed", True),
    ],
)
def test_optimizer_scheduler_precision(
    synthetic_root: Path,
    tmp_path: Path,
    optimizer: str,
    scheduler: str,
    precision: str,
    lr_changes: bool,
) -> None:
    cfg = compose_run(
        synthetic_root,
        tmp_path / "run",
        tmp_path / "cache",
        f"optimizer={optimizer}",
        f"scheduler={scheduler}",
        f"trainer.precision={precision}",
        "loss=bce_dice",
    )
    seen: set = (
        set()
    )  # (autocast dtype or None, logits dtype) of every network forward during the run

    def record(module, args, output) -> None:
        if isinstance(module, SegmentationModule):
            autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            seen.add((autocast, output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        metrics = train(cfg)
    finally:
        handle.remove()
    bf16 = precision == "bf16-mixed"
    assert seen == ({(torch.bfloat16, torch.bfloat16)} if bf16 else {(None, torch.float32)})
    assert metrics.best.dsc_volume_mean == max(h.dsc_volume_mean for h in metrics.history)
    lrs = _lr_by_epoch(tmp_path / "run")
    assert len(lrs) == 2 and (lrs[0] != lrs[1]) == lr_changes


class StopMidEpoch(L.Callback):
    """Stops the fit after the first batch of epoch 3 (of 4 batches), as max_time's timer does."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        trainer.should_stop = trainer.global_step == 9


@pytest.mark.parametrize(
    "limit", ["+trainer.max_steps=9", f"+callbacks.stop._target_={__name__}.StopMidEpoch"]
)
def test_an_epoch_cut_by_a_limit_is_never_reported(
    synthetic_root: Path, tmp_path: Path, limit: str
) -> None:
    """max_steps (no validation of the cut epoch) or a time limit (Lightning validates it) stops
    epoch 3 after one batch: epoch 2 is reported, scored from epoch 2's checkpoint."""
    cfg = compose_run(
        synthetic_root, tmp_path / "run", tmp_path / "cache", "trainer.max_epochs=5", limit
    )
    metrics = train(cfg)
    assert [h.epoch for h in metrics.history] == [1, 2] and metrics.epochs == 2
    selected = metrics.selected
    assert selected.scores.epoch == selected.training_grid.epoch == 2 and selected.geometry
    assert read_checkpoint(Path(selected.checkpoint))["global_step"] == selected.scores.step == 8


def test_returns_the_best_score_and_honours_test_flag(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = compose_run(
        synthetic_root, tmp_path / "run", tmp_path / "cache", "test=true", "trainer.max_epochs=1"
    )
    metrics = train(cfg)
    assert metrics.best.epoch == 1 and len(metrics.history) == 1
    # no test_patients: the test set is the validation set, scored with the best checkpoint
    assert metrics.test.per_patient == pytest.approx(metrics.best.per_patient)


def test_inner_validation_fold_is_scored_on_its_held_out_patients(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """data.split.n_inner_val: the checkpoint is chosen on patients drawn from the fold's
    training patients, then the held-out fold is tested with it (test implied); the sweep report
    pools those test scores."""
    from brainseg.data.splits import kfold_split
    from brainseg.reporting.sweep import write_report
    from brainseg.runfiles import read_split

    job = tmp_path / "sweep" / "0"
    overrides = ["data.split.kind=kfold", "data.split.n_folds=2", "data.split.n_inner_val=1"]
    metrics = train(
        compose_run(synthetic_root, job, tmp_path / "cache", *overrides, "trainer.max_epochs=1")
    )
    patients = sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())
    fold = kfold_split(patients, 2, 0, seed=42)
    split = read_split(job)
    assert split.test == fold.val and split.n_inner_val == 1
    assert len(split.val) == 1 and set(split.val) < set(fold.train)
    test = metrics.test
    assert sorted(test.per_patient) == fold.val and test.rule == "inner_val"
    assert test.checkpoint == metrics.best_checkpoint and test.epoch == 1
    assert list(metrics.best.per_patient) == split.val
    (job / ".hydra").mkdir(exist_ok=True)
    (job / ".hydra" / "overrides.yaml").write_text("- data.split.fold=0\n")
    rows = write_report(tmp_path / "sweep")["per_patient"]
    assert {r["patient"]: r["dsc"] for r in rows} == test.per_patient


def test_reports_the_epoch_its_selection_rule_picks_with_every_volume_metric(
    tiny_run: Path,
) -> None:
    from brainseg.runfiles import read_metrics

    metrics = read_metrics(tiny_run)  # debug=tiny: 2 epochs, selection=last
    selected, scores = metrics.selected, metrics.selected.scores
    assert metrics.selection == selected.rule == "last" and scores.epoch == 2
    assert selected.checkpoint == metrics.last_checkpoint and selected.checkpoint.endswith(
        "last.ckpt"
    )
    # reported as predict.py scores (every slice, original geometry, the decided post-processing);
    # the epoch's training-grid figure is kept beside it
    assert selected.training_grid.values == metrics.history[-1].values
    decision = json.loads((tiny_run / "postprocessing.json").read_text())
    assert selected.postprocessing == decision["postprocessing"]
    chosen = [c["postprocessing"] for c in decision["candidates"]].index(decision["postprocessing"])
    assert scores.per_patient == {p: d[chosen] for p, d in decision["per_patient"].items()}
    per_patient = scores.per_patient_metrics
    assert sorted(per_patient) == sorted(scores.per_patient)
    assert all(per_patient[p]["dsc"] == pytest.approx(scores.per_patient[p]) for p in per_patient)
    assert scores.value("val/hd95") == pytest.approx(
        sum(v["hd95"] for v in per_patient.values()) / len(per_patient)
    )
    with open(tiny_run / "csv" / "metrics.csv") as fh:
        assert {"val/hd95", "val/assd", "val/nsd", "val/lesion_recall"} <= set(
            next(csv.DictReader(fh))
        )


def test_a_lower_is_better_monitor_keeps_the_lowest_value_everywhere(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """monitor=val/hd95: the best epoch, the best checkpoint, the plateau scheduler and the value
    train.py hands a sweeper all follow the lowest HD95, stored under its own name."""
    from brainseg.config import _optimisation_direction
    from brainseg.runfiles import read_metrics

    run = tmp_path / "run"
    cfg = compose_run(
        synthetic_root,
        run,
        tmp_path / "cache",
        "monitor=val/hd95",
        "scheduler=plateau",
        "trainer.max_epochs=3",
        "optimizer.lr=0.01",
        "trainer.limit_train_batches=2",
    )
    assert cfg.scheduler.scheduler.mode == "min"
    assert _optimisation_direction(cfg.monitor) == "minimize"
    metrics = train(cfg)
    hd95 = [h.value("val/hd95") for h in metrics.history]
    best = min(range(len(hd95)), key=hd95.__getitem__)
    assert len(set(hd95)) > 1 and hd95[best] < max(hd95), "the epochs must differ in HD95"
    assert metrics.best.epoch == best + 1 and metrics.best.value("val/hd95") == min(hd95)
    assert not metrics.higher_is_better and read_metrics(run) == metrics
    (checkpoint,) = (run / "checkpoints").glob("best-*.ckpt")
    assert checkpoint.name == f"best-epoch{best + 1:03d}-hd95_{min(hd95):.4f}.ckpt"
    assert metrics.best_checkpoint == str(checkpoint)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["evaluation.selection=best"],
            "evaluation.selection='best' is unknown; choose one of ['last', 'best_on_val']",
        ),
        (
            ["data.split.n_val=6"],
            "data.split.kind=reference needs more than data.split.n_val=6 patients, found 6",
        ),
        (
            ["model.encoder_name=resnet35"],
            "model.encoder_name='resnet35' is unknown; choose one of",
        ),
        (["+loss.terms.dise=1.0"], "loss 'dise' is unknown; choose from ['bce', 'dice'"),
        (["ckpt_path=missing.ckpt"], "ckpt_path='missing.ckpt': no such checkpoint file"),
        (["data.sampling=random"], "data.sampling='random' is unknown; choose one of"),
        (
            ["data.preprocess.interpolation=bicubic"],
            "data.preprocess.interpolation='bicubic' is unknown",
        ),
        (  # before: "optimizer: full_key: optimizer"
            ["optimizer._target_=torch.optim.Adamm"],
            "optimizer: cannot import _target_ 'torch.optim.Adamm'",
        ),
        pytest.param(
            ["trainer.accelerator=gpu"],
            "trainer: No supported gpu backend found!",  # before: "trainer: full_key: trainer"
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is available"),
        ),
        # before: a traceback, and a string read letter by letter as step names
        (["postprocessing=[5]"], "postprocessing[0]: 5 is not a step (a name or a mapping)"),
        (["postprocessing=[null]"], "postprocessing[0]: None is not a step"),
        (
            ["postprocessing=largest_component"],
            "postprocessing='largest_component' must be a step list",
        ),
    ],
)
def test_bad_settings_print_one_error_line(
    synthetic_root: Path, tmp_path: Path, capsys, overrides: list[str], expected: str
) -> None:
    cfg = compose_run(synthetic_root, tmp_path / "run", tmp_path / "cache", *overrides)
    with pytest.raises(SystemExit) as info:
        run_task(train, cfg)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]


@pytest.mark.parametrize(
    ("trainer", "env", "refused"),
    [
        ({"devices": 2, "strategy": "ddp"}, {}, True),
        ({"devices": 2, "strategy": "auto"}, {}, True),
        ({"devices": 2, "strategy": "ddp_spawn"}, {}, False),
        ({"devices": 2, "strategy": "ddp"}, {"SLURM_NTASKS": "2"}, False),
        ({"devices": 1, "strategy": "ddp"}, {}, False),
    ],
)
def test_multirun_ddp_trap_is_refused(monkeypatch, trainer: dict, env: dict, refused: bool) -> None:
    from helpers import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from brainseg.errors import ConfigError
    from brainseg.training.pipeline import check_sweep_ranks

    cfg = compose([f"trainer.{k}={v}" for k, v in trainer.items()])
    cfg.hydra.mode = RunMode.MULTIRUN
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = "/tmp"
    HydraConfig.instance().set_config(cfg)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        if refused:
            with pytest.raises(ConfigError, match="would re-run the whole sweep on every rank"):
                check_sweep_ranks(cfg.trainer)
        else:
            check_sweep_ranks(cfg.trainer)
    finally:
        HydraConfig.instance().cfg = None


def test_wandb_run_id_follows_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    """A requeued job (same directory) resumes the same W&B run; another directory gets another."""
    from brainseg.tracking import wandb_credentials, wandb_logger

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert not wandb_credentials()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_credentials()
    first = wandb_logger(save_dir=str(tmp_path / "a"), offline=True)
    again = wandb_logger(save_dir=str(tmp_path / "a"), offline=True)
    other = wandb_logger(save_dir=str(tmp_path / "b"), offline=True)
    assert first.version == again.version != other.version


def test_weight_averaging_is_what_is_checkpointed_and_predicted(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """callbacks=ema: the checkpoints' weights (validated, reported, predicted) are the average,
    last.ckpt keeps the raw weights beside them for a resume."""
    from brainseg.checkpoint import read_checkpoint
    from brainseg.prediction.members import load_checkpoint

    run = tmp_path / "run"
    train(compose_run(synthetic_root, run, tmp_path / "cache", "callbacks=ema"))
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)
    network = load_checkpoint(run / "checkpoints" / "last.ckpt").net.state_dict()
    for name, value in network.items():
        assert torch.equal(value, averaged[f"net.{name}"]), name


def test_context_slices_train_predict_and_export(synthetic_root: Path, tmp_path: Path) -> None:
    """2.5-D input end to end: the stack is recorded with the model, predict.py and the ONNX
    export read it from there."""
    import numpy as np

    from brainseg.data.reader import find_patients, read_patient
    from brainseg.prediction.inference import Predictor
    from brainseg.prediction.members import export_onnx, load_checkpoint, load_onnx

    run = tmp_path / "run"
    metrics = train(
        compose_run(synthetic_root, run, tmp_path / "cache", "data.preprocess.context_slices=1")
    )
    assert metrics.history
    member = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert member.preprocess.context_slices == 1 and member.input_channels == 9
    onnx_member = load_onnx(export_onnx(member, tmp_path / "model.onnx", 32))
    assert onnx_member.input_channels == 9
    volume = read_patient(find_patients(synthetic_root)[0])
    torch_probs = Predictor([member]).predict(volume)
    assert np.abs(torch_probs - Predictor([onnx_member]).predict(volume)).max() <= 1e-4


def test_final_validation_calibrates_and_draws_the_worst_patients(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "calibration.json").read_text())
    assert record["temperature"] > 0 and record["pixels"] > 0
    assert set(record["ece_per_patient"]) == set(record["patients"]) and len(record["patients"])
    assert 0 <= record["ece"]["after"] <= 1 and 0 <= record["ece"]["before"] <= 1
    for picture in ("calibration.png", "failures.png"):
        assert (tiny_run / picture).stat().st_size > 1000


def test_a_nan_loss_stops_the_run_keeping_the_last_finite_checkpoint(
    synthetic_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The loss turns nan in epoch 2 (as with optimizer=sgd optimizer.lr=1e6): the run stops there,
    last.ckpt and the best checkpoint stay those of epoch 1, metrics.json stays valid JSON."""
    step = SegmentationModule.training_step

    def diverging(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch >= 1 else loss

    monkeypatch.setattr(SegmentationModule, "training_step", diverging)
    run = tmp_path / "run"
    cfg = compose_run(synthetic_root, run, tmp_path / "cache", "trainer.max_epochs=3")
    with pytest.raises(SystemExit) as info:  # before: all 3 epochs ran, exit status 0
        run_task(train, cfg)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: train loss is nan at epoch 2, step "), line
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # Lightning counts from 0: the first epoch
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert [p.name.startswith("best-epoch001") for p in run.glob("checkpoints/best*")] == [True]

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in metrics.json")

    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=refuse)
    assert [entry["epoch"] for entry in metrics["history"]] == [1]


def test_sigint_exits_130_with_one_line(capsys) -> None:
    import os
    import signal
    import time

    def interrupted(cfg) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)

    with pytest.raises(SystemExit) as info:  # before: a KeyboardInterrupt traceback
        run_task(interrupted, None)
    assert info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["error: stopped by SIGINT"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ckpt_path=missing.ckpt", "ckpt_path='missing.ckpt': no such checkpoint file"),
        ("monitor=val/dice", "val/dice"),
        (
            "callbacks.lr_monitor._target_=lightning.NoSuchCallback",
            "callbacks.lr_monitor._target_: cannot import 'lightning.NoSuchCallback'",
        ),
    ],
)
def test_sweep_preflight_checks_ckpt_path_monitor_and_targets(override: str, expected: str) -> None:
    from helpers import compose
    from hydra.core.hydra_config import HydraConfig

    from brainseg.errors import ConfigError
    from brainseg.hydra_callbacks import preflight

    config = compose(["debug=tiny", override])
    try:
        with pytest.raises(ConfigError, match=expected):  # before: every job failed alike
            preflight(config, ["data"])  # a sweep over data: checked by the jobs
    finally:
        HydraConfig.instance().cfg = None


def test_a_cuda_device_without_a_gpu_is_one_line(monkeypatch) -> None:
    from brainseg.errors import ConfigError
    from brainseg.prediction.pipeline import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda: no CUDA GPU here"):
        _device("cuda")  # before: torch's traceback at the first tensor moved there
    assert _device("auto") == "cpu"


def test_a_resumed_csv_log_drops_the_rows_of_the_epoch_it_trains_again(tmp_path: Path) -> None:
    from brainseg.training.loggers import ResumableCSVLogger

    def logger() -> ResumableCSVLogger:
        return ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")

    first = logger()
    for step, epoch in enumerate([1, 1, 2, 2, 3]):  # killed during epoch 3, saved after epoch 2
        first.log_metrics({"train/loss": 1.0, "epoch": float(epoch)}, step=step)
    first.save()
    resumed = logger()
    resumed.log_metrics({"train/loss": 0.5, "epoch": 3.0}, step=4)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        rows = [(row["epoch"], row["train/loss"]) for row in csv.DictReader(fh)]
    assert rows == [("1", "1.0"), ("1", "1.0"), ("2", "1.0"), ("2", "1.0"), ("3", "0.5")]


def test_metrics_json_is_strict_json_with_nan_written_as_null(tmp_path: Path) -> None:
    from brainseg.runfiles import VAL_DSC, EpochScores, RunMetrics, read_metrics, write_metrics

    nan = float("nan")
    values = {VAL_DSC: 0.5, "val/hd95": nan}
    entry = EpochScores(epoch=1, step=3, values=values, train_loss=float("inf"))
    metrics = RunMetrics("val/dsc_volume", True, "last", None, None, None, None, 1, nan, [entry])
    path = write_metrics(tmp_path, metrics)
    content = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))  # before: NaN
    assert content["train_seconds"] is None and content["history"][0]["train_loss"] is None
    assert read_metrics(tmp_path).history[0].values["val/hd95"] is None


def test_a_failed_start_is_marked_and_a_later_success_clears_the_mark(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    from brainseg.runfiles import read_failure

    run = tmp_path / "run"
    run.mkdir()  # as Hydra makes it before the task starts
    bad = compose_run(synthetic_root, run, tmp_path / "cache", "model.encoder_name=resnet_nope")
    with pytest.raises(SystemExit):
        run_task(train, bad)
    failure = read_failure(run)  # before: nothing told this directory from a real run
    assert failure is not None and failure.type == "ConfigError" and "resnet_nope" in failure.error
    run_task(train, compose_run(synthetic_root, run, tmp_path / "cache"))
    assert read_failure(run) is None and (run / "metrics.json").exists()
