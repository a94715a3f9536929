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
    assert cfg.data.split.kind == "reference" and cfg.data.split.n_val == 10 and cfg.optimizer.lr == 1e-4
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
