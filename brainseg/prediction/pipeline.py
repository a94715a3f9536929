"""`predict(cfg)`: masks in the original geometry, per-patient scores and pictures, or ONNX; each
patient predicted only by the members that did not train on it, and scored with its subset
(train / val / test / unseen) from their recorded splits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from tqdm import tqdm

from brainseg.config import to_plain
from brainseg.data.reader import find_patients, read_patient
from brainseg.errors import ConfigError
from brainseg.evaluation.folds import Split, held_out_members
from brainseg.metrics.calibration import calibrated
from brainseg.metrics.uncertainty import entropy_map, lesion_entropy
from brainseg.paths import resolve_path
from brainseg.postprocessing import apply, check_steps, score
from brainseg.postprocessing.records import steps_to_apply
from brainseg.prediction.inference import Predictor, tta_views
from brainseg.prediction.members import (
    Member,
    export_onnx,
    find_sweep_checkpoints,
    load_checkpoint,
    load_onnx,
    probability_threshold,
)
from brainseg.reporting.figures import failure_case, write_overlays
from brainseg.reporting.scores import UNCERTAINTY_COLUMN, headline, patient_subset, write_scores
from brainseg.reporting.sweep import sweep_jobs
from brainseg.run_lock import claim_output_dir
from brainseg.runfiles import PATIENT_COLUMN, SUBSET_COLUMN, write_json

log = logging.getLogger("brainseg")
ENSEMBLE_MODES = ("out_of_fold", "all")


def member_plan(
    splits: Sequence[Split], patients: Iterable[str], mode: str
) -> dict[str, list[int]]:
    """Per patient, the indices of the members that predict it: `out_of_fold`, those that held it
    out (a patient every member trained on: all, reported as seen); `all`, every member."""
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble={mode!r} is unknown; choose one of {list(ENSEMBLE_MODES)}")
    everyone = list(range(len(splits)))
    if mode == "all":
        return {name: everyone for name in patients}
    return {name: held or everyone for name, held in held_out_members(splits, patients).items()}


def subsets_for(plan: Mapping[str, Sequence[int]], splits: Sequence[Split]) -> dict[str, str]:
    """Each patient's subset with respect to the members that predict it."""
    return {name: patient_subset(name, [splits[i] for i in used]) for name, used in plan.items()}


def warn_seen_in_training(subsets: Mapping[str, str]) -> list[str]:
    """Log one line naming the scored patients that a member predicting them trained on."""
    seen = sorted(name for name, subset in subsets.items() if subset == "train")
    if seen:
        log.warning(
            "%d scored patient(s) were seen in training by a member that predicts them "
            "(reported as subset=train, left out of the headline): %s",
            len(seen),
            ", ".join(seen),
        )
    return seen


def _path(value: str | None, setting: str) -> Path | None:
    return resolve_path(to_absolute_path(str(value)), setting) if value else None


def load_members(cfg: DictConfig) -> list[Member]:
    """Members from `onnx`, `sweep_dir` or the `checkpoints` list."""
    if cfg.get("onnx"):
        return [load_onnx(_path(cfg.onnx, "onnx"))]
    given = cfg.get("checkpoints") or []
    if isinstance(given, str):  # checkpoints=run/last.ckpt: one file, not a list of letters
        given = [given]
    chosen: list[tuple[Path, str | None]] = [(_path(p, "checkpoints"), None) for p in given]
    if cfg.get("sweep_dir"):
        chosen += find_sweep_checkpoints(sweep_jobs(_path(cfg.sweep_dir, "sweep_dir"), cfg.pick))
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
    check_steps(to_plain(cfg.get("postprocessing")), "postprocessing")  # before any work
    if cfg.get("threshold") is not None:
        probability_threshold(cfg.threshold, "threshold")
    members = load_members(cfg)
    if cfg.get("export"):
        if cfg.export != "onnx":
            raise ConfigError(f"export={cfg.export!r} is unknown; choose onnx")
        out = claim_output_dir(
            _path(cfg.get("output_dir"), "output_dir"), "output_dir", {}, cfg.overwrite
        )
        size = members[0].preprocess.image_size or 256
        path = export_onnx(members[0], out / "model.onnx", size)
        log.info("exported %s to %s", members[0].path, path)
        return {"export": str(path)}
    return run_prediction(cfg, members)


def _temperature(members: list[Member]) -> float | None:
    """The mean of the members' temperatures; None, said once, where one has none recorded."""
    missing = [m.path for m in members if m.temperature is None]
    if missing:
        log.info("%s: no calibration temperature recorded; probabilities uncalibrated", missing[0])
        return None
    return float(np.mean([m.temperature for m in members]))


def run_prediction(cfg: DictConfig, members: list[Member]) -> dict[str, Any]:
    """Predict every patient under `cfg.input` with the given members (see predict)."""
    input_root = _path(cfg.get("input"), "input")
    if input_root is None:
        raise ConfigError(
            "input is required: a data root in the kaggle_3m layout or one patient folder"
        )
    patients = find_patients(input_root, require_masks=False)
    no_bars = None if cfg.get("progress") is None else not cfg.progress  # null: on a terminal
    # Every unreadable or inconsistent slice is named before anything is written.
    for files in tqdm(patients, desc="checking inputs", unit="patient", disable=no_bars):
        read_patient(files)
    splits = [m.split for m in members]
    plan = member_plan(splits, [p.name for p in patients], cfg.ensemble)
    output = _path(cfg.get("output_dir"), "output_dir")
    out = claim_output_dir(output, "output_dir", {"input": input_root}, cfg.overwrite)
    views = tta_views(cfg.tta.hflip, list(cfg.tta.rotations or []), list(cfg.tta.scales or []))
    predictor = Predictor(members, views, cfg.batch_size, _device(cfg.device))
    threshold = float(cfg.threshold if cfg.get("threshold") is not None else members[0].threshold)
    temperature = _temperature(members)
    lesion_threshold = (
        threshold if temperature is None else float(calibrated(threshold, temperature))
    )
    subsets = subsets_for(plan, splits)
    warn_seen_in_training({p.name: subsets[p.name] for p in patients if p.masks is not None})
    chosen = steps_to_apply(
        to_plain(cfg.get("postprocessing")),
        [(m.path, m.postprocessing) for m in members],
        [m.path.parent.parent for m in members if m.selection],  # a sweep's jobs
    )
    steps = chosen["postprocessing"]
    rows, cases, uncertainty = [], [], {}
    for files in tqdm(patients, desc="patients", unit="patient", disable=no_bars):
        name = files.name
        volume = read_patient(files)
        probs = predictor.predict(volume, plan[name])
        mask = apply(probs > threshold, steps)
        folder = out / files.folder.name  # as the input folder is called
        folder.mkdir(exist_ok=True)
        for z, image_path in enumerate(files.images):  # named after the image, not the folder
            tifffile.imwrite(folder / f"{image_path.stem}_mask.tif", mask[z].astype("uint8") * 255)
        if temperature is not None:  # the masks above stay those of the uncalibrated threshold
            probs = calibrated(probs, temperature)
        uncertainty[name] = lesion_entropy(probs, lesion_threshold)
        if cfg.probability_maps:
            np.save(folder / "probabilities.npy", probs.astype(np.float16))
            np.save(folder / "entropy.npy", entropy_map(probs).astype(np.float16))
        truth = volume.mask.astype(bool) if volume.mask is not None else None
        if truth is not None:  # the written mask, scored as brainseg.evaluate scores it
            row = {PATIENT_COLUMN: name, SUBSET_COLUMN: subsets[name], **score(mask, truth)}
            rows.append({**row, UNCERTAINTY_COLUMN: uncertainty[name]})
            case = (volume.image, truth, mask, row["dsc"], files.numbers, uncertainty[name])
            cases.append(failure_case(name, *case))
        if cfg.figures.overlays:
            write_overlays(name, files.numbers, volume.image, mask, truth, out / "overlays")
    summary: dict[str, Any] = {
        "input": str(input_root),
        "patients": len(patients),
        "members": [str(m.path) for m in members],
        "tta": [repr(v) for v in views],
        "threshold": threshold,
        "temperature": temperature,  # that calibrated the probabilities (None: uncalibrated)
        "postprocessing": chosen,
        "selection": {str(m.path): m.selection for m in members if m.selection},
        "ensemble": cfg.ensemble,
        "member_plan": plan,  # patient -> indices into members
        "subsets": subsets,
        "uncertainty": uncertainty,  # per patient: brainseg.metrics.uncertainty.lesion_entropy
    }
    if rows:
        note = figure_note(members, threshold, steps, cfg.ensemble)
        summary["dsc"] = write_scores(rows, out, note=note, cases=cases)
        caveat = ""
        if any(m.selection == "best_on_val" for m in members):
            caveat = (
                "checkpoints selected on their validation patients "
                "(evaluation.selection=best_on_val: optimistic)"
            )
        log.info(headline(summary["dsc"], steps, out, caveat))
    write_json(out / "prediction.json", summary)
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
