"""Checkpoints are safe to open: a file that would run code when unpickled is refused, unrun, on
every path that reads one (predict.py, `ckpt_path`, auto-resume, Lightning's own reads). Writes
are atomic: a full disk or a kill mid-write keeps the previous file and leaves no partial one."""

from __future__ import annotations

import errno
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from helpers import PROJECT, compose, compose_run

from brainseg.checkpoint import read_checkpoint, remove_temporary_files, save_atomically
from brainseg.errors import DataError
from brainseg.models import build_model
from brainseg.prediction.members import load_checkpoint
from brainseg.run_lock import claim_run_directory, release_run_directory
from brainseg.training.checkpoints import AtomicCheckpointIO, BestCheckpoint


class _Payload:
    """What an attacker hides in a checkpoint: unpickling it creates `marker`."""

    def __init__(self, marker: Path, shell: bool = False) -> None:
        self.marker, self.shell = marker, shell

    def __reduce__(self):
        if self.shell:
            return (os.system, (f"touch {self.marker}",))
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _with_payload(checkpoint: dict, path: Path, marker: Path, shell: bool = False) -> Path:
    torch.save({**checkpoint, "payload": _Payload(marker, shell)}, path)
    return path


def _assert_refused_unrun(message: str, path: Path, marker: Path, needs="builtins.exec") -> None:
    assert not marker.exists(), "the payload ran"
    assert message.startswith(f"{path}: refused: loading it needs {needs},"), message
    assert "\n" not in message


def test_load_from_checkpoint_instantiates_nothing_a_file_names(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Plain values can name code too: Lightning's `load_from_checkpoint` passes the file's
    hyper-parameters to `__init__`, which would build a loss term from any `_target_`."""
    from brainseg.training.module import SegmentationModule

    marker, pickled = tmp_path / "marker", io.BytesIO()
    torch.save(_Payload(marker), pickled)
    checkpoint = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    payload = {
        "_target_": "torch.load",
        "weights_only": False,
        "f": {"_target_": "io.BytesIO", "initial_bytes": pickled.getvalue()},
    }
    checkpoint["hyper_parameters"]["loss"] = {"terms": {"dice": 1.0, "extra": payload}}
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(NotImplementedError, match="members.load_checkpoint"):
        SegmentationModule.load_from_checkpoint(path)  # before: the payload ran
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize(
    ("shell", "needs"), [(False, "builtins.exec"), (True, f"{os.system.__module__}.system")]
)
def test_a_checkpoint_that_would_run_code_is_refused_unrun(
    tmp_path: Path, shell: bool, needs: str
) -> None:
    marker = tmp_path / "marker"
    plain = {"state_dict": {}, "hyper_parameters": {}, "brainseg": {"preprocess": {}}}
    path = _with_payload(plain, tmp_path / "payload.ckpt", marker, shell)
    for read in (read_checkpoint, AtomicCheckpointIO().load_checkpoint):
        # before: the payload ran and the file loaded; then (torch 2.13) os.system went unnamed
        with pytest.raises(DataError) as raised:
            read(path)
        _assert_refused_unrun(str(raised.value), path, marker, needs)


@pytest.mark.slow
def test_predict_refuses_a_checkpoint_that_would_run_code(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    from brainseg.cli import run_task
    from brainseg.prediction.pipeline import predict

    marker = tmp_path / "marker"
    good = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    path = _with_payload(good, tmp_path / "shared.ckpt", marker)
    overrides = [f"input={synthetic_root}", f"checkpoints=[{path}]"]
    overrides += [f"output_dir={tmp_path / 'out'}", "progress=false"]
    with pytest.raises(SystemExit) as exited:  # predict.py's task, as it runs it
        run_task(predict, compose(overrides, hydra_node=False, config_name="predict"))
    assert exited.value.code == 2  # before: 0, masks written
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    (line,) = errors
    _assert_refused_unrun(line.removeprefix("error: "), path, marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ckpt_path", "auto_resume"])
def test_resume_refuses_a_checkpoint_that_would_run_code(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path, how: str
) -> None:
    from brainseg.training.pipeline import train

    marker, run = tmp_path / "marker", tmp_path / "run"
    good = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    if how == "ckpt_path":
        path = _with_payload(good, tmp_path / "shared.ckpt", marker)
        overrides = [f"ckpt_path={path}"]
    else:  # someone replaced the run's last.ckpt
        (run / "checkpoints").mkdir(parents=True)
        path = _with_payload(good, run / "checkpoints" / "last.ckpt", marker)
        overrides = []
    before = path.read_bytes()
    with pytest.raises(DataError) as raised:  # before: the payload ran, then a bare traceback
        train(compose_run(synthetic_root, run, tmp_path / "cache", *overrides))
    _assert_refused_unrun(str(raised.value), path, marker)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_checkpoints_train_py_writes_load_safely(tiny_run: Path) -> None:
    """The project's own best and last checkpoints (optimizer, loops, callbacks) need nothing
    beyond tensors and plain values."""
    paths = sorted((tiny_run / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    for path in paths:
        assert "brainseg" in read_checkpoint(path)


@pytest.mark.parametrize(
    "refusal",
    [  # as Python's file object reports it; as torch's archive writer does (2.13)
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    ],
)
def test_a_full_disk_is_named_and_leaves_the_previous_file(
    tmp_path: Path, monkeypatch, refusal: Exception
) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 1}, path)

    def fills_the_disk(obj, f, *args, **kwargs):
        with open(f, "ab") if isinstance(f, (str, Path)) else nullcontext(f) as fh:
            fh.write(b"PK\x03\x04 partial")
        raise refusal

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(DataError) as raised:  # before: a bare C++ RuntimeError
        save_atomically({"epoch": 2}, path)
    assert str(raised.value) == f"no space left on device writing {path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # before: a partial file
    assert torch.load(path, weights_only=True) == {"epoch": 1}


KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
import torch
from brainseg.checkpoint import save_atomically

def slow_save(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04 partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

torch.save = slow_save
save_atomically({"epoch": 2}, Path(sys.argv[1]))
"""


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = run / "checkpoints" / "last.ckpt"
    save_atomically({"epoch": 1}, path)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(path)], cwd=PROJECT, stdout=subprocess.PIPE
    )
    assert writer.stdout.readline().strip() == b"writing"
    writer.kill()
    writer.wait()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    (partial,) = [p for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert str(writer.pid) in partial.name  # each process writes its own temporary file
    claim_run_directory(run)  # what train.py does first
    remove_temporary_files(path.parent)
    release_run_directory(run)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def _checkpoint(path: Path, model: dict | None = None, **provenance) -> Path:
    """A brainseg checkpoint of a small untrained network, its records as given."""
    settings = {"arch": "unet", "encoder_name": "resnet18", "encoder_depth": 3}
    settings["decoder_channels"] = [16, 8, 8]
    net = build_model(**settings)
    record = {"config": {}, "data_root": None, "preprocess": {"image_size": 32}, **provenance}
    checkpoint = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"model": {**settings, **(model or {})}, "metric": {}},
        "brainseg": record,
    }
    torch.save(checkpoint, path)
    return path


def test_opening_a_checkpoint_sends_no_request(tmp_path: Path) -> None:
    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    server.timeout = 60  # bounds a request that never completes
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/weights.pth"
    overlay = {"url": url, "hf_hub_id": None}  # timm's download of the encoder's weights
    model = {"encoder_name": "tu-test_resnet", "encoder_weights": "imagenet"}
    path = _checkpoint(tmp_path / "shared.ckpt", {**model, "pretrained_cfg_overlay": overlay})
    try:
        with pytest.raises(DataError) as raised:  # before: an HTTPError from the request
            load_checkpoint(path)
    finally:
        server.shutdown()
        server.server_close()
    assert requests == []  # before: ['/weights.pth']
    assert str(raised.value).startswith(f"{path}: model.pretrained_cfg_overlay=")


def test_an_imagenet_encoder_checkpoint_opens_offline(tmp_path: Path, monkeypatch) -> None:
    attempts: list[tuple] = []

    def offline(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    path = _checkpoint(tmp_path / "imagenet.ckpt", {"encoder_weights": "imagenet"})
    member = load_checkpoint(path)  # before: downloaded ImageNet weights, then overwrote them
    assert attempts == []
    assert member.model["encoder_weights"] == "imagenet"  # recorded as trained
    assert member(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def _set(where: str, key: str, value) -> Callable[[dict], None]:
    """Sets `key` in the checkpoint's provenance ("brainseg"), hyper-parameters or model."""

    def change(checkpoint: dict) -> None:
        hparams = checkpoint["hyper_parameters"]
        {"brainseg": checkpoint["brainseg"], "hparams": hparams, "model": hparams["model"]}[where][
            key
        ] = value

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set("hparams", "metric", {"threshold": "0.5"}), "threshold='0.5' must be a probability"),
        (_set("hparams", "metric", {"threshold": 1.5}), "threshold=1.5 must be a probability"),
        (_set("brainseg", "preprocess", {"image_size": 10**6}), "image_size=1000000 is over 4096"),
        (_set("brainseg", "preprocess", {"resample": "mm"}), "preprocess holds foreign settings"),
        (_set("brainseg", "preprocess", "all"), "provenance preprocess is not a mapping"),
        (_set("brainseg", "split", {"val": "TCGA_1"}), "split is not lists of patient names"),
        (_set("brainseg", "data_root", 3), "provenance data_root is not a path"),
        (_set("brainseg", "postprocessing", "all"), "provenance postprocessing is not"),
        (_set("model", "decoder_channels", [2**40]), "decoder_channels=[1099511627776] is no"),
        (_set("model", "encoder_depth", "5"), "model.encoder_depth='5' is no brainseg model"),
        (_set("hparams", "model", ["unet"]), "model settings are not a mapping"),
        (_set("hparams", "postprocessing", "largest"), "postprocessing is not a step list"),
        (lambda c: c.update(hyper_parameters=[]), "not a brainseg checkpoint"),
    ],
)
def test_every_recorded_value_is_checked(tmp_path: Path, change, field: str) -> None:
    path = _checkpoint(tmp_path / "shared.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    with pytest.raises(DataError) as raised:  # before: bare tracebacks, or masks at any size
        load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and field in message and "\n" not in message, message


def test_a_resumed_callback_state_keeps_only_checkpoint_files_of_the_run(
    tmp_path: Path, caplog
) -> None:
    folder = tmp_path / "run" / "checkpoints"
    (folder / "x.ckpt").mkdir(parents=True)  # a folder with a checkpoint's name
    (folder / "best.ckpt").write_bytes(b"weights")
    (folder / "other.ckpt").write_bytes(b"weights")
    sent, score = "/elsewhere/run/checkpoints", torch.tensor(0.5)
    callback = BestCheckpoint(monitor="val/dsc_volume", dirpath=str(folder))
    callback.load_state_dict(
        {
            "dirpath": sent,
            "best_model_path": f"{sent}/best.ckpt",  # the run was moved: followed
            "kth_best_model_path": f"{folder}/..",
            "last_model_path": f"{folder}/x.ckpt",
            "best_k_models": {
                f"{sent}/best.ckpt": score,
                f"{folder}/../../victim": score,
                "/elsewhere/victim.ckpt": score,
                f"{folder}/x.ckpt": score,
                f"{folder}/other.ckpt": "0.9",  # a score that is no number
            },
            "best_model_score": score,
        }
    )
    # before: the run's parent, ../victim and x.ckpt/ were kept, to be removed recursively
    assert callback.best_k_models == {str(folder / "best.ckpt"): score}
    assert callback.best_model_path == str(folder / "best.ckpt")
    assert callback.kth_best_model_path == callback.last_model_path == ""
    (line,) = [r.getMessage() for r in caplog.records if "forgotten" in r.getMessage()]
    assert "victim" in line and "x.ckpt" in line
