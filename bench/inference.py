"""Benchmark of inference: slices/s for one model, with flip TTA, and for a 3-model ensemble,
then predict.py's end-to-end wall time over a data root (masks, scores, figures).

    python bench/inference.py --root ../shared/data/lgg

Untrained networks of the default architecture are used: speed does not depend on the weights.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from brainseg.cli import exit_status
from brainseg.data.preprocess import PreprocessConfig
from brainseg.data.reader import find_patients, read_patient
from brainseg.models import build_model
from brainseg.prediction.inference import Predictor, tta_views
from brainseg.prediction.members import Member
from brainseg.prediction.pipeline import run_prediction

CONF = Path(__file__).resolve().parents[1] / "conf"


def members(n: int, arch: str, encoder: str, size: int) -> list[Member]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = build_model(arch, encoder_name=encoder).eval()
        out.append(
            Member(
                path=Path(f"bench{seed}.ckpt"),
                preprocess=PreprocessConfig(image_size=size),
                model={"arch": arch, "encoder_name": encoder},
                net=net,
            )
        )
    return out


def slices_per_second(predictor: Predictor, images: torch.Tensor) -> float:
    predictor.member_probabilities(predictor.members[0], images[:2])  # warm-up
    start = time.perf_counter()
    for member in predictor.members:
        predictor.member_probabilities(member, images)
    return images.shape[0] / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> None:
    """Measure and print the figures."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"device: {device}, torch threads: {torch.get_num_threads()}, {args.arch}/{args.encoder}, "
        f"{args.image_size} px"
    )
    patients = find_patients(args.root)
    one = members(1, args.arch, args.encoder, args.image_size)
    _, images = Predictor(one).preprocessed(read_patient(patients[0]))
    images = images.repeat((args.slices + images.shape[0] - 1) // images.shape[0], 1, 1, 1)[
        : args.slices
    ]
    for label, predictor in (
        ("1 model", Predictor(one, batch_size=args.batch_size, device=device)),
        (
            "1 model + flip TTA (2 views)",
            Predictor(one, tta_views(hflip=True), args.batch_size, device),
        ),
        (
            "ensemble of 3",
            Predictor(
                members(3, args.arch, args.encoder, args.image_size),
                batch_size=args.batch_size,
                device=device,
            ),
        ),
    ):
        print(f"inference, {label}: {slices_per_second(predictor, images):.1f} slices/s")
    with (
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
        tempfile.TemporaryDirectory(prefix="brainseg-bench-") as tmp,
    ):
        cfg = compose(
            config_name="predict",
            overrides=[
                f"input={Path(args.root).resolve()}",
                f"output_dir={tmp}/out",
                "postprocessing=[largest_component]",
                "progress=false",
                f"batch_size={args.batch_size}",
                f"device={device}",
            ],
        )
        start = time.perf_counter()
        summary = run_prediction(cfg, one)
        wall = time.perf_counter() - start
    slices = sum(len(p.numbers) for p in patients)
    print(
        "predict end to end "
        "(read, preprocess, 1 model, restore, write masks, scores, overlays, GIFs): "
        f"{wall:.1f} s for {summary['patients']} patients, {slices} slices"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root in the kaggle_3m layout")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=48, help="slices timed per configuration")
    parser.add_argument("--batch-size", type=int, default=16)
    return exit_status(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
