"""Inference pieces: geometry restore, TTA inverses, ensembles, ONNX parity, checkpoint errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brainseg.checkpoint import Provenance
from brainseg.data.preprocess import PreprocessConfig, preprocess, restore_geometry
from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import BrainsegError, ConfigError, DataError
from brainseg.metrics import dice_score
from brainseg.models import build_model
from brainseg.prediction.inference import Predictor, View, tta_views
from brainseg.prediction.members import Member, export_onnx, load_checkpoint, load_onnx

CFG = PreprocessConfig(image_size=32)


def _member(seed: int, net: nn.Module | None = None) -> Member:
    torch.manual_seed(seed)
    net = net or build_model("unet", encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8])
    return Member(path=Path(f"member{seed}.ckpt"), preprocess=CFG, model={"arch": "unet"}, net=net.eval())


def _volume(synthetic_root: Path, index: int = 0):
    return read_patient(find_patients(synthetic_root)[index])


def test_restore_geometry_puts_masks_back(synthetic_root: Path) -> None:
    volume = _volume(synthetic_root)
    exact = preprocess(volume, PreprocessConfig(image_size=None))
    np.testing.assert_array_equal(restore_geometry(exact.mask.astype(np.float32), exact.geometry) > 0.5, volume.mask)
    resized = preprocess(volume, PreprocessConfig(image_size=48))
    restored = restore_geometry(resized.mask.astype(np.float32), resized.geometry) > 0.5
    assert restored.shape == volume.mask.shape and dice_score(restored, volume.mask) > 0.85


def test_views_invert_exactly_or_nearly() -> None:
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(View(hflip=True).backward(View(hflip=True).forward(x)), x)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 40, 40), 9, stride=1)  # 32 x 32, smooth
    for view in (View(angle=10), View(scale=1.1), View(True, -10, 0.9)):
        back = view.backward(view.forward(smooth))
        assert (back - smooth)[..., 10:-10, 10:-10].abs().max() < 0.05
    assert len(tta_views(hflip=True, rotations=[-10, 10], scales=[1.05])) == 8
    with pytest.raises(ConfigError, match="tta.scales"):
        tta_views(scales=[0])


def test_tta_keeps_a_pointwise_model_unchanged(synthetic_root: Path) -> None:
    """A per-pixel model commutes with flips/rotations, so TTA must give back the plain map (inside)."""
    torch.manual_seed(0)  # the weights, not the tests run before, decide how much interpolation differs
    pointwise = nn.Conv2d(3, 1, 1)
    volume = _volume(synthetic_root)
    plain = Predictor([_member(0, pointwise)]).predict(volume)
    augmented = Predictor([_member(0, pointwise)], tta_views(hflip=True, rotations=[8])).predict(volume)
    assert np.abs(plain - augmented)[:, 20:44, 20:44].max() < 0.05


def test_ensemble_is_the_mean_of_member_maps(synthetic_root: Path) -> None:
    volume = _volume(synthetic_root, 1)
    a, b = _member(1), _member(2)
    views = tta_views(hflip=True)
    pa = Predictor([a], views).predict(volume)
    pb = Predictor([b], views).predict(volume)
    both = Predictor([a, b], views).predict(volume)
    assert np.abs(pa - pb).max() > 1e-3  # the members differ
    np.testing.assert_allclose(both, (pa + pb) / 2, atol=1e-6)
    assert both.shape == volume.mask.shape


def test_members_with_other_preprocessing_are_refused() -> None:
    other = _member(3)
    other.preprocess = PreprocessConfig(image_size=48)
    with pytest.raises(ConfigError, match="preprocesses differently"):
        Predictor([_member(1), other])


def test_onnx_export_matches_pytorch(synthetic_root: Path, tmp_path: Path) -> None:
    member = _member(4)
    member.net.eval()
    path = export_onnx(member, tmp_path / "model.onnx", 32)
    onnx_member = load_onnx(path)
    assert onnx_member.preprocess == member.preprocess
    volume = _volume(synthetic_root, 2)
    torch_probs = Predictor([member]).predict(volume)
    onnx_probs = Predictor([onnx_member]).predict(volume)
    assert np.abs(torch_probs - onnx_probs).max() <= 1e-4


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(DataError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(DataError, match="not a brainseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01")
    with pytest.raises(BrainsegError, match="bad.onnx"):
        load_onnx(tmp_path / "bad.onnx")


@pytest.mark.slow  # tiny_run trains
def test_checkpoint_rebuilds_the_trained_network(tiny_run: Path) -> None:
    member = load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    assert member.model["encoder_name"] == "resnet18" and member.preprocess.image_size == 32
    assert member(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ConfigError, match="model.encoder_name='resnet34' does not match last.ckpt, trained with model.encoder_name='resnet18'"):
        load_checkpoint(tiny_run / "checkpoints" / "last.ckpt", {"encoder_name": "resnet34"})


def test_prediction_imports_nothing_from_training() -> None:
    """Loading a checkpoint or an ONNX model must not pull in Lightning or the trainer."""
    code = ("import sys, brainseg.prediction.pipeline, brainseg.prediction.members; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith('brainseg.training')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_provenance_round_trips_through_a_checkpoint_dict(tmp_path: Path) -> None:
    record = Provenance(config={"seed": 3}, data_root="/data", preprocess=CFG.to_dict(), split={"val": ["a"]})
    checkpoint: dict = {}
    record.store(checkpoint)
    assert Provenance.read(checkpoint, tmp_path / "x.ckpt") == record
    with pytest.raises(DataError, match="x.ckpt: not a brainseg checkpoint"):
        Provenance.read({"state_dict": {}}, tmp_path / "x.ckpt")
