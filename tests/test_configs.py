"""Config composition: presets, the SLURM launcher following the trainer, every group option composes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import PROJECT, compose

import brainseg.config  # noqa: F401  (registers the brainseg.* resolvers)


@pytest.mark.parametrize(
    ("preset", "key", "value"),
    [
        ("reference", "loss.terms", {"dice": 1.0}),
        ("reference_bce_dice", "loss.terms", {"dice": 0.5, "bce": 0.5}),
        ("reference_scse", "model.decoder_attention_type", "scse"),
        ("reference_resnet34_imagenet", "model.encoder_weights", "imagenet"),
        ("reference_unetpp", "model.arch", "unetpp"),
    ],
)
def test_study_presets_change_one_thing_on_the_reference(preset: str, key: str, value) -> None:
    from omegaconf import OmegaConf

    cfg = compose([f"experiment={preset}"])
    selected = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(selected) if isinstance(value, dict) else selected) == value
    assert cfg.data.split == "reference" and cfg.data.n_val == 10 and cfg.optimizer.lr == 1e-4
    assert cfg.data.preprocess.image_size == 256 and cfg.trainer.max_epochs == 100 and cfg.data.batch_size == 16


@pytest.mark.parametrize(
    ("overrides", "tasks", "gpus", "nodes"),
    [
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], 4, 4, 2),
        (["trainer.accelerator=cpu", "trainer.devices=2"], 2, None, 1),
        ([], 1, None, 1),
    ],
)
def test_slurm_launcher_follows_the_trainer(overrides: list[str], tasks: int, gpus, nodes: int) -> None:
    launcher = compose(["hydra/launcher=slurm", *overrides]).hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (tasks, gpus, nodes)
    assert launcher.max_num_timeout == 3 and launcher._target_.endswith("SlurmLauncher")


def test_every_option_of_every_group_composes() -> None:
    conf = PROJECT / "conf"
    groups = ["model", "loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "data",
              "data/augmentation", "hparams_search"]
    for group in groups:
        for option in sorted(p.stem for p in (conf / group).glob("*.yaml")):
            compose([f"{group}={option}"])
    assert Path(conf / "predict.yaml").exists()


def test_optuna_search_space_builds_valid_models() -> None:
    """Every architecture the shipped search space offers fits the default model and the demo's
    (encoder_depth 4): logits of the input's size. fpn failed half the trials of a demo search."""
    import torch
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from brainseg.models import build_model

    space = compose(["hparams_search=optuna"]).hydra.sweeper.params
    archs = OverridesParser.create().parse_override(f"model.arch={space['model.arch']}").value().list
    for base in ([], ["experiment=demo"]):
        for arch in archs:
            model = compose([*base, f"model.arch={arch}", "model.encoder_name=resnet18"], hydra_node=False).model
            with torch.no_grad():
                logits = build_model(**model).eval()(torch.zeros(1, 3, 64, 64))
            assert logits.shape[-2:] == (64, 64), f"model.arch={arch} with {base or 'defaults'}"


def test_sweeps_started_in_the_same_second_get_their_own_directory(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    def sweep_config():
        return OmegaConf.create({"dir": f"${{brainseg.fresh_dir:{tmp_path}/multiruns/2026-01-01_12-00-00}}"})

    first, second = sweep_config(), sweep_config()
    assert first.dir == f"{tmp_path}/multiruns/2026-01-01_12-00-00" and second.dir == f"{first.dir}-2"
    assert first.dir == first.dir and Path(first.dir).is_dir() and Path(second.dir).is_dir()
    job = sweep_config()
    OmegaConf.copy_cache(from_config=first, to_config=job)  # what Hydra does for each job of a sweep
    assert job.dir == first.dir
    assert "brainseg.fresh_dir" in OmegaConf.to_yaml(compose([]).hydra.sweep)
