"""Ensemble members: a trained network from a brainseg checkpoint, or an exported ONNX model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainseg.checkpoint import Provenance, load_weights, read_checkpoint
from brainseg.data.preprocess import PreprocessConfig
from brainseg.errors import ConfigError, DataError
from brainseg.models.factory import build_model, recorded_model
from brainseg.runfiles import read_metrics

ONNX_METADATA_KEY = "brainseg"
MAX_IMAGE_SIZE = 4096  # px: a file's preprocessing may ask for no larger slices
NOT_RECORDED = {"steps": [], "source": "none recorded"}


@dataclass
class Member:
    """A callable (B, C, S, S) z-scored images -> (B, 1, S, S) logits, with its provenance."""

    path: Path
    preprocess: PreprocessConfig
    model: dict[str, Any]
    threshold: float = 0.5
    data_root: str | None = None
    split: dict[str, list[str]] = field(default_factory=dict)
    # The steps predict.py applies by default and their source: {"steps": [...], "source": ...}.
    postprocessing: dict[str, Any] = field(default_factory=lambda: dict(NOT_RECORDED))
    temperature: float | None = None  # calibrates its probabilities (None: not fitted)
    selection: str | None = None  # the evaluation.selection rule that picked it (sweep_dir)
    net: nn.Module | None = None
    session: Any = None  # onnxruntime.InferenceSession for ONNX members

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            (logits,) = self.session.run(
                None, {"image": images.detach().cpu().numpy().astype(np.float32)}
            )
            return torch.from_numpy(logits).to(images.device)
        return self.net(images)

    @property
    def input_channels(self) -> int:
        """The channels the network takes (an ONNX model's input shape says it itself)."""
        if self.session is not None:
            return int(self.session.get_inputs()[0].shape[1])
        return int(self.model.get("in_channels", 3))


def probability_threshold(value: Any, source: str, error: type[Exception] = ConfigError) -> float:
    """A threshold in (0, 1) (outside, masks are empty or full), else an `error` naming `source`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise error(f"{source}={value!r:.80} must be a probability threshold in (0, 1)")
    return float(value)


def _checked(path: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """A member's fields from the record a checkpoint or ONNX export holds, each value checked."""
    try:
        preprocess = PreprocessConfig(**record["preprocess"])
    except (TypeError, ValueError, ConfigError) as exc:
        raise DataError(f"{path}: preprocess holds foreign settings ({exc})") from None
    size = preprocess.image_size
    if size is not None and not (isinstance(size, int) and size <= MAX_IMAGE_SIZE):
        raise DataError(f"{path}: preprocess.image_size={size!r:.80} is over {MAX_IMAGE_SIZE} px")
    split, post = record.get("split") or {}, record["postprocessing"]
    if not isinstance(record.get("data_root"), str | None):
        raise DataError(f"{path}: data_root is not a path")
    if not isinstance(split, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v)
        for k, v in split.items()
    ):
        raise DataError(f"{path}: split is not lists of patient names")
    if not (isinstance(post, dict) and isinstance(post.get("steps"), list)):
        raise DataError(f"{path}: postprocessing is not a step list")
    temperature = (record.get("calibration") or {}).get("temperature")
    if not (temperature is None or isinstance(temperature, float) and 0.01 <= temperature <= 100):
        raise DataError(
            f"{path}: calibration temperature={temperature!r:.80} is not in [0.01, 100]"
        )
    return {
        "path": path,
        "preprocess": preprocess,
        "model": recorded_model(record["model"], path),
        "threshold": probability_threshold(record["threshold"], f"{path}: threshold", DataError),
        "data_root": record.get("data_root"),
        "split": split,
        "postprocessing": {**post, "source": str(post.get("source"))},
        "temperature": temperature,
    }


def load_checkpoint(path: str | Path, expected_model: Mapping[str, Any] | None = None) -> Member:
    """Rebuild the network of a brainseg training checkpoint (no Hydra needed), refusing one trained
    with other values of the `expected_model` settings the caller relies on."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    hparams, info = checkpoint["hyper_parameters"], Provenance.read(checkpoint, path)
    metric = hparams.get("metric")
    threshold = (metric if isinstance(metric, dict) else {}).get("threshold", 0.5)
    if decided := info.postprocessing:
        post = {**decided, "source": f"decided after training ({decided.get('decision')})"}
    else:
        source = f"the training setting postprocessing of {path.name} (no decision recorded)"
        post = {"steps": hparams.get("postprocessing") or [], "source": source}
    record = {**asdict(info), "model": hparams.get("model"), "threshold": threshold}
    fields = _checked(path, {**record, "postprocessing": post})
    model_cfg = fields["model"]
    for key, value in (expected_model or {}).items():
        if key not in model_cfg or model_cfg[key] != value:
            raise ConfigError(
                f"model.{key}={value!r} does not match {path.name}, trained with "
                f"model.{key}={model_cfg.get(key)!r}"
            )
    try:  # no download: the weights are the checkpoint's
        net = build_model(**{**model_cfg, "encoder_weights": None})
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    weights = {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }
    load_weights(net, weights, path, model_cfg)
    return Member(**fields, net=net.eval())


def _selected_checkpoint(job: Path) -> tuple[Path, str] | None:
    """The checkpoint a finished job's evaluation.selection rule reports and the rule (found in the
    job's own folder when the sweep was moved)."""
    metrics = read_metrics(job)
    reported = metrics and metrics.finished and metrics.selected
    recorded = reported and (reported.checkpoint or metrics.best_checkpoint)
    if not recorded:
        return None
    checkpoint = Path(recorded)
    if not checkpoint.is_file():
        checkpoint = job / "checkpoints" / checkpoint.name
    return checkpoint, reported.rule


def find_sweep_checkpoints(jobs: list[Path]) -> list[tuple[Path, str]]:
    """(checkpoint, rule) for finished jobs of a sweep (e.g. the k folds of a k-fold sweep,
    brainseg.reporting.sweep.sweep_jobs): the checkpoint each job's evaluation.selection rule
    reports, e.g. last.ckpt under `last`."""
    return [selected for selected in map(_selected_checkpoint, jobs) if selected]


def export_onnx(member: Member, path: Path, image_size: int) -> Path:
    """Write the member's network as ONNX (dynamic batch), its preprocessing in the metadata."""
    import onnx

    from brainseg.quiet import quiet_libraries

    quiet_libraries()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randn(2, member.preprocess.input_channels, image_size, image_size)
    torch.onnx.export(
        member.net.cpu().eval(),
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    calibration = None if member.temperature is None else {"temperature": member.temperature}
    record = {
        "path": str(member.path),
        "model": member.model,
        "preprocess": member.preprocess.to_dict(),
        "threshold": member.threshold,
        "data_root": member.data_root,
        "split": member.split,
        "postprocessing": member.postprocessing,
        "calibration": calibration,
    }
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(record)  # what load_onnx checks
    onnx.save(model, str(path))
    return path


def load_onnx(path: str | Path) -> Member:
    """An exported model run through onnxruntime on the CPU."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX model not found")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != ["image"]:
        raise DataError(f"{path}: model inputs are {inputs}, a brainseg export has ['image']")
    key, metadata = ONNX_METADATA_KEY, session.get_modelmeta().custom_metadata_map
    if key not in metadata:
        raise DataError(f"{path}: not a brainseg ONNX export (no '{key}' metadata)")
    try:
        info = json.loads(metadata[key])
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise DataError(f"{path}: '{key}' metadata is not a brainseg record (not a JSON object)")
    missing = [k for k in ("preprocess", "model", "threshold") if k not in info]
    if missing:
        raise DataError(f"{path}: '{key}' metadata lacks {', '.join(missing)}")
    info["postprocessing"] = info.get("postprocessing") or NOT_RECORDED
    return Member(**_checked(path, info), session=session)
