"""`predict(cfg)`: masks in the original geometry, per-patient scores and pictures,
or an ONNX export."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import tifffile
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from tqdm import tqdm

from brainseg.config import to_plain
from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError
from brainseg.paths import resolve_path
from brainseg.postprocessing import apply, check_steps
from brainseg.prediction.inference import Predictor, tta_views
from brainseg.prediction.members import (
    Member,
    export_onnx,
    find_sweep_checkpoints,
    load_checkpoint,
    load_onnx,
)
from brainseg.prediction.postprocess import resolve_postprocessing
from brainseg.prediction.subsets import member_plan, subsets_for, warn_seen_in_training
from brainseg.reporting.figures import bar_chart, write_overlays
from brainseg.reporting.scores import (
    HELD_OUT,
    headline,
    patient_row,
    subset_summary,
    write_scores,
)
from brainseg.runfiles import PATIENT_COLUMN, SUBSET_COLUMN

log = logging.getLogger("brainseg")

# Scored next to the written masks in dsc.csv (dsc_lcc, dsc_no_lcc), whatever steps were applied.
REPORTED_VARIANTS = {"lcc": [{"name": "largest_component"}], "no_lcc": []}


def _path(value: str | None, setting: str) -> Path | None:
    return resolve_path(to_absolute_path(str(value)), setting) if value else None


def _prepare_output(output_dir: Path | None, input_root: Path | None, overwrite: bool) -> Path:
    if output_dir is None:
        raise ConfigError("output_dir is required (a new or empty folder)")
    if input_root is not None and (
        output_dir.is_relative_to(input_root) or input_root.is_relative_to(output_dir)
    ):
        raise ConfigError(  # whatever overwrite says: predictions must never replace input files
            f"output_dir={str(output_dir)!r} overlaps the input {str(input_root)!r}; "
            "choose a folder outside it"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={str(output_dir)!r} is a file; choose a folder")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"output_dir={str(output_dir)!r} is not empty; "
            "choose another folder or set overwrite=true"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def load_members(cfg: DictConfig) -> list[Member]:
    """Members from `onnx`, `sweep_dir` or the `checkpoints` list."""
    if cfg.get("onnx"):
        return [load_onnx(_path(cfg.onnx, "onnx"))]
    chosen: list[tuple[Path, str | None]] = [
        (_path(p, "checkpoints"), None) for p in cfg.get("checkpoints") or []
    ]
    if cfg.get("sweep_dir"):
        chosen += find_sweep_checkpoints(_path(cfg.sweep_dir, "sweep_dir"))
    if not chosen:
        raise ConfigError(
            "checkpoints: give one or more checkpoint files, a sweep_dir, or an onnx model"
        )
    expected = to_plain(cfg.get("model")) or {}
    members = [load_checkpoint(path, expected) for path, _ in chosen]
    for member, (_, selection) in zip(members, chosen):
        member.selection = selection
    return members


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU here; use device=auto or device=cpu")
    return name


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run inference (or `export=onnx`); returns the run summary written to prediction.json."""
    setting = to_plain(cfg.get("postprocessing"))
    if isinstance(setting, list):  # checked before any work (recorded steps: when read)
        check_steps(setting, "postprocessing")
    members = load_members(cfg)
    if cfg.get("export"):
        if cfg.export != "onnx":
            raise ConfigError(f"export={cfg.export!r} is unknown; choose onnx")
        out = _prepare_output(_path(cfg.get("output_dir"), "output_dir"), None, cfg.overwrite)
        size = members[0].preprocess.image_size or 256
        path = export_onnx(members[0], out / "model.onnx", size)
        log.info("exported %s to %s", members[0].path, path)
        return {"export": str(path)}
    return run_prediction(cfg, members)


def _no_bars(cfg: DictConfig) -> bool | None:
    """tqdm's `disable` for `progress`: null leaves it to tqdm (bars only on a terminal)."""
    return None if cfg.get("progress") is None else not cfg.progress


def run_prediction(cfg: DictConfig, members: list[Member]) -> dict[str, Any]:
    """Predict every patient under `cfg.input` with the given members (see predict)."""
    input_root = _path(cfg.get("input"), "input")
    if input_root is None:
        raise ConfigError(
            "input is required: a data root in the kaggle_3m layout or one patient folder"
        )
    patients = find_patients(input_root, require_masks=False)
    for files in tqdm(patients, desc="checking inputs", unit="patient", disable=_no_bars(cfg)):
        read_patient(
            files
        )  # every unreadable or inconsistent slice is named before anything is written
    splits = [m.split for m in members]
    plan = member_plan(splits, [p.name for p in patients], cfg.ensemble)
    out = _prepare_output(_path(cfg.get("output_dir"), "output_dir"), input_root, cfg.overwrite)
    views = tta_views(cfg.tta.hflip, list(cfg.tta.rotations or []), list(cfg.tta.scales or []))
    predictor = Predictor(members, views, cfg.batch_size, _device(cfg.device))
    threshold = float(cfg.threshold if cfg.get("threshold") is not None else members[0].threshold)
    subsets = subsets_for(plan, splits)
    warn_seen_in_training({p.name: subsets[p.name] for p in patients if p.masks is not None})
    chosen = resolve_postprocessing(
        to_plain(cfg.get("postprocessing")), members, _path(cfg.get("sweep_dir"), "sweep_dir")
    )
    steps = chosen["postprocessing"]
    rows = []
    for files in tqdm(patients, desc="patients", unit="patient", disable=_no_bars(cfg)):
        volume = read_patient(files)
        probs = predictor.predict(volume, plan[files.name])
        raw = probs > threshold
        mask = apply(raw, steps)
        folder = out / files.folder.name  # as the input folder is called
        folder.mkdir(exist_ok=True)
        for z, image_path in enumerate(
            files.images
        ):  # named after the image, whatever the folder is called
            tifffile.imwrite(folder / f"{image_path.stem}_mask.tif", mask[z].astype("uint8") * 255)
        truth = volume.mask.astype(bool) if volume.mask is not None else None
        if truth is not None:
            variants = {name: apply(raw, variant) for name, variant in REPORTED_VARIANTS.items()}
            rows.append(
                {
                    **patient_row(files.name, truth, mask, variants),
                    SUBSET_COLUMN: subsets[files.name],
                }
            )
        if cfg.figures.overlays:
            write_overlays(files.name, files.numbers, volume.image, mask, truth, out / "overlays")
    summary: dict[str, Any] = {
        "input": str(input_root),
        "patients": len(patients),
        "members": [str(m.path) for m in members],
        "tta": [repr(v) for v in views],
        "threshold": threshold,
        "postprocessing": chosen,
        "selection": {str(m.path): m.selection for m in members if m.selection},
        "ensemble": cfg.ensemble,
        "member_plan": plan,  # patient -> indices into members
        "subsets": subsets,
    }
    if rows:
        summary["dsc"] = write_scores(rows, out, summary=subset_summary(rows))
        bar_chart(
            {r[PATIENT_COLUMN]: r["dsc"] for r in rows},
            out / "dsc.png",
            groups={r[PATIENT_COLUMN]: r[SUBSET_COLUMN] for r in rows},
            stats_groups=HELD_OUT,
            note=figure_note(members, threshold, steps, cfg.ensemble),
        )
        log.info(headline(summary["dsc"], steps, out, _selection_caveat(members)))
    (out / "prediction.json").write_text(json.dumps(summary, indent=2))
    return summary


def figure_note(
    members: list[Member], threshold: float, steps: list[dict[str, Any]], ensemble: str
) -> str:
    """What produced the scores, for the figure: checkpoint(s), threshold, post-processing."""
    names = [
        f"{m.path.parent.parent.name}/{m.path.name}"
        if m.path.parent.name == "checkpoints"
        else m.path.name
        for m in members
    ]
    shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
    models = shown if len(members) == 1 else f"{len(members)} members ({ensemble}): {shown}"
    postprocessing = ", ".join(s["name"] for s in steps) or "none"
    return f"{models}\nthreshold {threshold:g}, post-processing: {postprocessing}"


def _selection_caveat(members: list[Member]) -> str:
    """The label of checkpoints chosen as their run's best epoch on its validation patients."""
    if any(m.selection == "best_on_val" for m in members):
        return (
            "checkpoints selected on their validation patients "
            "(evaluation.selection=best_on_val: optimistic)"
        )
    return ""
