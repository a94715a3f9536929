"""Resume loses at most the epoch in progress: last.ckpt is the last epoch, written atomically,
followed when the run directory moves; the CSV log and history continue; bad files are named."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import PROJECT, compose_run, tiny_train_overrides

from brainseg.checkpoint import save_atomically
from brainseg.errors import BrainsegError
from brainseg.prediction.members import load_checkpoint
from brainseg.training import pipeline
from brainseg.training.pipeline import train

pytestmark = pytest.mark.slow
# The best checkpoint by "epoch" (min) is always epoch 0: deterministic "best is not the last
# epoch".
BEST_AT_FIRST_EPOCH = (
    "callbacks.model_checkpoint.monitor=epoch",
    "callbacks.model_checkpoint.mode=min",
    "callbacks.model_checkpoint.filename='best-epoch{epoch:03d}'",
)


def _val_epochs(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/dsc_volume")]


def test_last_is_the_last_epoch_best_is_slim_and_resume_continues(
    synthetic_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    metrics = train(
        compose_run(
            synthetic_root, run, tmp_path / "cache", *BEST_AT_FIRST_EPOCH, "trainer.max_epochs=3"
        )
    )
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer_states" in last  # before: a copy of the best (epoch 0)
    (best_path,) = (run / "checkpoints").glob("best-*.ckpt")
    best = torch.load(best_path, weights_only=True)
    assert best["epoch"] == 0 and "optimizer_states" not in best and "brainseg" in best
    assert metrics.last_checkpoint == str(run / "checkpoints" / "last.ckpt")

    # The run directory is moved, then restarted with more epochs (auto-resume from its last.ckpt).
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    # a best file an interrupted session wrote after the epoch its last.ckpt holds
    shutil.copy(
        moved / "checkpoints" / best_path.name, moved / "checkpoints" / "best-epoch004.ckpt"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(
            compose_run(
                synthetic_root,
                moved,
                tmp_path / "cache",
                *BEST_AT_FIRST_EPOCH,
                "trainer.max_epochs=5",
            )
        )
    # the run's own checkpoints are what it resumes from: nothing to warn about
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    assert [h.epoch for h in metrics.history] == [1, 2, 3, 4, 5]
    assert _val_epochs(moved) == [1, 2, 3, 4, 5]  # before: the restart deleted epochs 1-3
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    # before: last-v1.ckpt beside the stale last.ckpt, and the stray best-epoch004.ckpt kept
    assert names == [best_path.name, "last.ckpt"]
    assert metrics.best_checkpoint == str(moved / "checkpoints" / best_path.name)
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4


def test_a_finished_job_can_drop_the_training_state_of_last_ckpt(
    synthetic_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    switch = "callbacks.last_checkpoint.keep_training_state=false"
    metrics = train(compose_run(synthetic_root, run, tmp_path / "cache", switch))
    last = run / "checkpoints" / "last.ckpt"
    assert metrics.selected.checkpoint == str(last)
    assert "optimizer_states" not in torch.load(last, weights_only=False)  # before: no such switch
    assert load_checkpoint(last).model["encoder_name"]  # predict.py still reads it


def test_a_crash_during_a_checkpoint_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 1}, path)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 torn")
        raise OSError("input/output error")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        save_atomically({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _bad_checkpoints(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {
        "truncated": folder / "truncated.ckpt",
        "text": folder / "text.ckpt",
        "foreign": folder / "foreign.ckpt",
        "weights only": folder / "best.ckpt",
    }
    files["truncated"].write_bytes(good.read_bytes()[:5000])
    files["text"].write_text("not a checkpoint\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, files["foreign"])
    shutil.copy(next(good.parent.glob("best-*.ckpt")), files["weights only"])
    return files


@pytest.mark.parametrize("how", ["ckpt_path", "auto_resume"])
def test_bad_resume_checkpoints_are_named_in_one_line(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, how: str
) -> None:
    good = tiny_run / "checkpoints" / "last.ckpt"
    cases = {**_bad_checkpoints(tmp_path / "bad", good), "other architecture": good}
    for case, path in cases.items():
        run = tmp_path / case.replace(" ", "_")
        overrides = (
            ["model.encoder_depth=4", "model.decoder_channels=[32,16,8,8]"]
            if case == "other architecture"
            else []
        )
        if how == "ckpt_path":
            overrides.append(f"ckpt_path={path}")
        else:
            (run / "checkpoints").mkdir(parents=True)
            shutil.copy(path, run / "checkpoints" / "last.ckpt")
            path = run / "checkpoints" / "last.ckpt"
        with pytest.raises(BrainsegError) as raised:  # before: bare tracebacks from torch/Lightning
            train(compose_run(synthetic_root, run, tmp_path / "cache", *overrides))
        message = str(raised.value)
        assert message.startswith(f"{path}:") and "\n" not in message, (case, message)


class _SignalMidEpoch(L.Callback):
    """Sends the preemption signal to this process at the second batch of the second epoch."""

    sent_at: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1 and self.sent_at is None:
            self.sent_at = trainer.global_step
            os.kill(os.getpid(), signal.SIGUSR2)


class _Requeued(Exception):
    pass


def test_preemption_signal_saves_last_checkpoint_mid_epoch(
    synthetic_root: Path, tmp_path: Path, monkeypatch
) -> None:
    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint-and-requeue handler
        raise _Requeued

    sender, original = _SignalMidEpoch(), pipeline._instantiate_group
    monkeypatch.setattr(
        pipeline,
        "_instantiate_group",
        lambda group, node: original(group, node) + ([sender] if group == "callbacks" else []),
    )
    cfg = compose_run(synthetic_root, tmp_path / "run", tmp_path / "cache", "trainer.max_epochs=3")
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(_Requeued):
            train(cfg)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    # before: last.ckpt was the best checkpoint of epoch 0; now the batch the signal came in
    assert (last["epoch"], last["global_step"]) == (1, sender.sent_at + 1)
    monkeypatch.setattr(pipeline, "_instantiate_group", original)
    metrics = train(cfg)  # the requeued job finishes epoch 1 and runs epoch 2
    assert [h.epoch for h in metrics.history] == [1, 2, 3]


def test_kill_9_resumes_from_the_last_completed_epoch(
    synthetic_root: Path, tmp_path: Path, caplog
) -> None:
    run = tmp_path / "run"
    args = [
        "train.py",
        *tiny_train_overrides(synthetic_root, run, tmp_path / "cache"),
        *BEST_AT_FIRST_EPOCH,
        "trainer.max_epochs=30",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline, seen = time.monotonic() + 600, None  # only bounds a failure
    try:
        while time.monotonic() < deadline:
            stamp = last.stat().st_mtime_ns if last.is_file() else None
            if (
                stamp != seen and torch.load(last, weights_only=True)["epoch"] >= 2
            ):  # atomic: never torn
                break
            seen = stamp
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)["epoch"]
    assert saved >= 2
    # the restart, in this process: only the kill needs one of its own
    with caplog.at_level(logging.INFO, logger="brainseg"):
        train(
            compose_run(
                synthetic_root,
                run,
                tmp_path / "cache",
                *BEST_AT_FIRST_EPOCH,
                f"trainer.max_epochs={saved + 2}",
            )
        )
    # Lightning counts from 0 inside the file; the log line counts from 1, as everywhere else
    assert f"resuming from {last} (saved in epoch {saved + 1})" in caplog.text
    # before: resumed from the best (epoch 0) and trained epochs 1..saved again; the CSV lost
    # session 1
    epochs = _val_epochs(run)
    assert sorted(set(epochs)) == list(range(1, saved + 3))  # from 1, as on the console
    assert all(
        epochs.count(e) == 1 for e in range(1, saved + 2)
    )  # only the epoch in progress may repeat


def _crafted_last(good: Path, path: Path, dirpath: Path, last: str, best: str) -> Path:
    """`good` with the callbacks' recorded paths replaced: LastCheckpoint removes its recorded
    `best_model_path` at its next save, BestCheckpoint its `kth_best_model_path` at a new best."""
    checkpoint = torch.load(good, weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        worst = torch.tensor(-1.0)
        crafted = last if key == "LastCheckpoint" else best
        state.update(dirpath=str(dirpath), best_model_path=crafted, kth_best_model_path=crafted)
        state.update(best_k_models={crafted: worst}, kth_value=worst, best_model_score=worst)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("how", ["auto_resume", "ckpt_path"])
def test_a_resume_removes_no_file_its_state_names_outside_the_run(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, how: str, caplog
) -> None:
    run, canary = tmp_path / "run", tmp_path / "victim"
    folder = run / "checkpoints" / "x.ckpt"  # a directory with a checkpoint's name
    for keep in (canary, folder, run):
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "keep.txt").write_text("mine")
    good = tiny_run / "checkpoints" / "last.ckpt"
    if how == "auto_resume":  # a last.ckpt whose paths climb out of the run directory
        climbs = f"{run}/checkpoints/../../{canary.name}"
        _crafted_last(good, run / "checkpoints" / "last.ckpt", run / "checkpoints", climbs, climbs)
        overrides = []
    else:  # a run directory received from elsewhere: its state names the sender's directory
        sent = tiny_run / "checkpoints"
        path = _crafted_last(good, tmp_path / "sent.ckpt", sent, f"{sent}/..", f"{sent}/x.ckpt")
        overrides = [f"ckpt_path={path}"]
    no_decision = "postprocessing_candidates=[]"  # (it would open x.ckpt/ as a checkpoint)
    train(
        compose_run(
            synthetic_root, run, tmp_path / "cache", "trainer.max_epochs=3", no_decision, *overrides
        )
    )
    # before: the canary (auto-resume) or the whole run directory and x.ckpt/ (ckpt_path) removed
    for keep in (canary, folder, run):
        assert (keep / "keep.txt").read_text() == "mine", keep
    assert "not checkpoint files of this run; forgotten" in caplog.text


def test_the_best_checkpoint_is_written_once_without_training_state(
    synthetic_root: Path, tmp_path: Path, monkeypatch
) -> None:
    from brainseg.training import checkpoints

    writes: list[str] = []

    def counted(checkpoint: dict, path) -> None:
        writes.append(Path(path).name)
        save_atomically(checkpoint, path)

    monkeypatch.setattr(checkpoints, "save_atomically", counted)
    run = tmp_path / "run"
    train(compose_run(synthetic_root, run, tmp_path / "cache", *BEST_AT_FIRST_EPOCH))
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert writes.count(best.name) == 1, writes  # before: 2, a full dump then its slim rewrite
    content = torch.load(best, weights_only=True)
    assert "optimizer_states" not in content and "callbacks" not in content
    assert content["state_dict"] and content["brainseg"]["preprocess"]
