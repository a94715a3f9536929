"""Inference pieces: geometry restore, TTA inverses, ensembles, ONNX parity, checkpoint errors."""

from __future__ import annotations

import logging
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
    net = net or build_model(
        "unet", encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8]
    )
    return Member(
        path=Path(f"member{seed}.ckpt"), preprocess=CFG, model={"arch": "unet"}, net=net.eval()
    )


def _volume(synthetic_root: Path, index: int = 0):
    return read_patient(find_patients(synthetic_root)[index])


def test_restore_geometry_puts_masks_back(synthetic_root: Path) -> None:
    volume = _volume(synthetic_root)
    exact = preprocess(volume, PreprocessConfig(image_size=None))
    np.testing.assert_array_equal(
        restore_geometry(exact.mask.astype(np.float32), exact.geometry) > 0.5, volume.mask
    )
    resized = preprocess(volume, PreprocessConfig(image_size=48))
    restored = restore_geometry(resized.mask.astype(np.float32), resized.geometry) > 0.5
    assert restored.shape == volume.mask.shape and dice_score(restored, volume.mask) > 0.85


def test_views_invert_exactly_or_nearly() -> None:
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(View(hflip=True).backward(View(hflip=True).forward(x)), x)
    smooth = torch.nn.functional.avg_pool2d(
        torch.rand(1, 1, 40, 40), 9, stride=1
    )  # 32 x 32, smooth
    for view in (View(angle=10), View(scale=1.1), View(True, -10, 0.9)):
        back = view.backward(view.forward(smooth))
        assert (back - smooth)[..., 10:-10, 10:-10].abs().max() < 0.05
    assert len(tta_views(hflip=True, rotations=[-10, 10], scales=[1.05])) == 8
    with pytest.raises(ConfigError, match="tta.scales"):
        tta_views(scales=[0])


def test_tta_keeps_a_pointwise_model_unchanged(synthetic_root: Path) -> None:
    """A per-pixel model commutes with flips/rotations, so TTA must give back the plain map
    (inside)."""
    torch.manual_seed(
        0
    )  # the weights, not the tests run before, decide how much interpolation differs
    pointwise = nn.Conv2d(3, 1, 1)
    volume = _volume(synthetic_root)
    plain = Predictor([_member(0, pointwise)]).predict(volume)
    augmented = Predictor([_member(0, pointwise)], tta_views(hflip=True, rotations=[8])).predict(
        volume
    )
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


def test_onnx_export_matches_pytorch(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    member = _member(4)
    member.net.eval()
    with caplog.at_level(logging.INFO):
        path = export_onnx(member, tmp_path / "model.onnx", 32)
    chatter = [r.name for r in caplog.records if r.name.startswith("onnx") and r.levelno < 30]
    assert not chatter  # before: onnx_ir's passes logged at INFO
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


def _onnx_file(path: Path, metadata: str | None, input_name: str = "image") -> Path:
    """A small valid ONNX model (identity), with the given `brainseg` metadata."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 3, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["logits"])],
        "identity",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "brainseg", metadata
    onnx.save(model, str(path))
    return path


def test_a_tampered_onnx_file_is_named_with_what_is_missing(tmp_path: Path) -> None:
    import json

    good = {"preprocess": PreprocessConfig().to_dict(), "model": {}, "threshold": 0.5}
    assert load_onnx(_onnx_file(tmp_path / "good.onnx", json.dumps(good))).threshold == 0.5
    cases = {
        "no metadata": (None, "not a brainseg ONNX export (no 'brainseg' metadata)"),
        "not json": ("{oops", "'brainseg' metadata is not a brainseg record"),
        "a list": ("[1, 2]", "'brainseg' metadata is not a brainseg record"),
        "no preprocess": (json.dumps({"model": {}}), "metadata lacks preprocess, threshold"),
        "foreign preprocess": (
            json.dumps({**good, "preprocess": {"resample": "mm"}}),
            "preprocess holds foreign settings",
        ),
        "foreign input": (json.dumps(good), "model inputs are ['x'], a brainseg export has"),
        "foreign model setting": (
            json.dumps({**good, "model": {"pretrained_cfg_overlay": {"url": "http://x"}}}),
            "model.pretrained_cfg_overlay={'url': 'http://x'} is no brainseg model setting",
        ),
        "threshold text": (json.dumps({**good, "threshold": "high"}), "threshold='high' must"),
        "huge slices": (
            json.dumps({**good, "preprocess": {"image_size": 10**7}}),
            "preprocess.image_size=10000000 is over 4096 px",
        ),
    }
    for case, (metadata, expected) in cases.items():  # before: bare tracebacks (json, KeyError)
        path = tmp_path / f"{case.replace(' ', '_')}.onnx"
        _onnx_file(path, metadata, "x" if case == "foreign input" else "image")
        with pytest.raises(DataError) as raised:
            load_onnx(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and expected in message, (case, message)
        assert "\n" not in message


@pytest.mark.slow  # tiny_run trains
def test_checkpoint_rebuilds_the_trained_network(tiny_run: Path) -> None:
    member = load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    assert member.model["encoder_name"] == "tu-test_resnet" and member.preprocess.image_size == 32
    assert member(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(
        ConfigError,
        match=(
            "model.encoder_name='resnet34' does not match last.ckpt, "
            "trained with model.encoder_name='tu-test_resnet'"
        ),
    ):
        load_checkpoint(tiny_run / "checkpoints" / "last.ckpt", {"encoder_name": "resnet34"})


class BrightFlair(nn.Module):
    """A stub network: lesion wherever the z-scored FLAIR channel is near its clipped maximum."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 50 * (images[:, 1:2] - 1.3)


@pytest.mark.parametrize(
    "cfg",
    [CFG, PreprocessConfig(image_size=None), PreprocessConfig(crop_to_brain=False, image_size=48)],
)
def test_every_slice_preprocessing_keeps_the_training_slices_exact(
    synthetic_root: Path, cfg: PreprocessConfig
) -> None:
    volume = _volume(synthetic_root, 3)
    training = preprocess(volume, cfg)
    every = preprocess(volume, cfg, every_slice=True)
    assert every.geometry.slice_indices == list(range(len(volume.numbers))) and len(
        training.numbers
    ) < len(every.numbers)
    kept = training.geometry.slice_indices
    np.testing.assert_array_equal(every.image[kept], training.image)
    np.testing.assert_array_equal(every.mask[kept], training.mask)
    assert (every.channel_mean, every.channel_std) == (training.channel_mean, training.channel_std)
    assert (
        every.geometry.box == training.geometry.box and every.geometry.pad == training.geometry.pad
    )


def test_lesions_in_the_first_and_last_slices_are_predicted(synthetic_root: Path) -> None:
    """Training drops the end slices; prediction must still cover them (written empty before)."""
    volume = _volume(synthetic_root, 0)
    for z in (0, len(volume.numbers) - 1):
        volume.image[z, 28:36, 28:36, 1] = 255
        volume.mask[z, 28:36, 28:36] = 1
    member = Member(path=Path("stub.ckpt"), preprocess=CFG, model={}, net=BrightFlair())
    predicted = Predictor([member]).predict(volume) > 0.5
    for z in (0, len(volume.numbers) - 1):
        assert dice_score(predicted[z], volume.mask[z].astype(bool)) > 0.8


def test_predict_with_chosen_members_uses_only_those(synthetic_root: Path) -> None:
    volume = _volume(synthetic_root, 1)
    a, b = _member(1), _member(2)
    np.testing.assert_allclose(
        Predictor([a, b]).predict(volume, [1]), Predictor([b]).predict(volume), atol=1e-6
    )
    with pytest.raises(ConfigError, match="no ensemble member selected"):
        Predictor([a, b]).predict(volume, [])


def _fold_members(synthetic_root: Path, tmp_path: Path) -> tuple[list[str], list[Member]]:
    """Three stub 'folds' over the six synthetic patients, each with its recorded split."""
    names = [p.name for p in find_patients(synthetic_root)]
    members = []
    for k in range(3):
        val = names[k::3]
        member = _member(10 + k)
        member.path = tmp_path / f"fold{k}" / "checkpoints" / "best.ckpt"
        member.split = {"train": [n for n in names if n not in val], "val": val, "test": []}
        members.append(member)
    return names, members


def test_fold_ensemble_predicts_out_of_fold_and_reports_subsets(
    synthetic_root: Path, tmp_path: Path, caplog
) -> None:
    import csv
    import json
    import logging

    from helpers import compose

    from brainseg.postprocessing import score
    from brainseg.prediction.pipeline import run_prediction

    names, members = _fold_members(synthetic_root, tmp_path)

    def run(mode: str) -> tuple[dict, dict]:
        out = tmp_path / mode
        cfg = compose(
            [
                f"input={synthetic_root}",
                f"output_dir={out}",
                f"ensemble={mode}",
                "figures.overlays=false",
                "progress=false",
            ],
            hydra_node=False,
            config_name="predict",
        )
        summary = run_prediction(cfg, members)
        with open(out / "dsc.csv") as fh:
            return summary, {r["patient"]: r for r in csv.DictReader(fh)}

    summary, rows = run("out_of_fold")
    assert summary["member_plan"] == {n: [i % 3] for i, n in enumerate(names)}
    assert {r["subset"] for r in rows.values()} == {"val"} and summary["dsc"]["n_held_out"] == 6
    volume = _volume(synthetic_root, 4)  # held out by fold 1 only
    alone = score(Predictor([members[1]]).predict(volume) > 0.5, volume.mask)
    assert float(rows[volume.name]["dsc"]) == pytest.approx(alone["dsc"], abs=1e-6)
    assert (tmp_path / "out_of_fold" / "dsc.png").stat().st_size > 10_000

    with caplog.at_level(logging.INFO, logger="brainseg"):
        summary, rows = run("all")
    assert {r["subset"] for r in rows.values()} == {"train"} and summary["dsc"]["n_held_out"] == 0
    assert (
        json.loads((tmp_path / "all" / "dsc_summary.json").read_text())["by_subset"]["train"][
            "dsc"
        ]["n"]
        == 6
    )
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.startswith("6 scored patient(s) were seen in training") and all(
        n in warning for n in names
    )
    assert any(r.getMessage().startswith("no held-out patients to score") for r in caplog.records)


def test_prediction_imports_nothing_from_training() -> None:
    """Loading a checkpoint or an ONNX model must not pull in Lightning or the trainer."""
    code = (
        "import sys, brainseg.prediction.pipeline, brainseg.prediction.members; "
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] == 'lightning' or m.startswith('brainseg.training')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_provenance_round_trips_through_a_checkpoint_dict(tmp_path: Path) -> None:
    record = Provenance(
        config={"seed": 3}, data_root="/data", preprocess=CFG.to_dict(), split={"val": ["a"]}
    )
    checkpoint: dict = {}
    record.store(checkpoint)
    assert Provenance.read(checkpoint, tmp_path / "x.ckpt") == record
    with pytest.raises(DataError, match="x.ckpt: not a brainseg checkpoint"):
        Provenance.read({"state_dict": {}}, tmp_path / "x.ckpt")


def test_context_stacks_repeat_the_end_slices() -> None:
    from brainseg.data.dataset import context_indices

    assert context_indices(4, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert context_indices(3, 0).tolist() == [[0], [1], [2]]
    with pytest.raises(DataError, match="TCGA_X: 2 slices cannot give 2 neighbours"):
        context_indices(2, 2, "TCGA_X")


def test_training_and_prediction_stack_the_same_neighbours(synthetic_root: Path) -> None:
    """data.preprocess.context_slices=1: 9 channels, the slice itself in the middle, in training
    samples and in predict.py's network input alike."""
    from brainseg.data.dataset import SliceDataset, zscore_channels_first

    stacked = PreprocessConfig(image_size=32, context_slices=1)
    volume = _volume(synthetic_root)
    pre = preprocess(volume, stacked, every_slice=True)
    item = SliceDataset([pre], None, context_slices=1)[0]
    assert item["image"].shape == (32, 32, 9) and item["mean"].shape == (9,)
    assert torch.equal(item["image"][..., 0:3], item["image"][..., 3:6])  # slice 0 repeats
    assert torch.equal(item["image"][..., 6:9], SliceDataset([pre])[1]["image"])
    member = _member(
        5,
        build_model(
            "unet",
            encoder_name="resnet18",
            encoder_depth=3,
            decoder_channels=[32, 16, 8],
            in_channels=9,
        ),
    )
    member.preprocess, member.model = stacked, {"arch": "unet", "in_channels": 9}
    _, images = Predictor([member]).preprocessed(volume)
    network_input = zscore_channels_first(item["image"][None], item["mean"], item["std"])
    assert torch.allclose(images[0], network_input[0], atol=1e-5)
    assert Predictor([member]).predict(volume).shape == volume.mask.shape


def test_a_network_that_does_not_fit_its_recorded_stack_is_refused() -> None:
    member = _member(6)  # 3 input channels
    member.preprocess = PreprocessConfig(image_size=32, context_slices=2)
    with pytest.raises(DataError, match="takes 3 input channels, but its record stacks 2"):
        Predictor([member])
