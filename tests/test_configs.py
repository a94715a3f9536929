"""Config composition: presets, the SLURM launcher following the trainer,
every group option composes."""

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
    assert (
        cfg.data.split.kind == "reference"
        and cfg.data.split.n_val == 10
        and cfg.optimizer.lr == 1e-4
    )
    assert (
        cfg.data.preprocess.image_size == 256
        and cfg.trainer.max_epochs == 100
        and cfg.data.batch_size == 16
    )


@pytest.mark.parametrize(
    ("overrides", "tasks", "gpus", "nodes"),
    [
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], 4, 4, 2),
        (["trainer.accelerator=cpu", "trainer.devices=2"], 2, None, 1),
        ([], 1, None, 1),
    ],
)
def test_slurm_launcher_follows_the_trainer(
    overrides: list[str], tasks: int, gpus, nodes: int
) -> None:
    launcher = compose(["hydra/launcher=slurm", *overrides]).hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (tasks, gpus, nodes)
    assert launcher.max_num_timeout == 3 and launcher._target_.endswith("SlurmLauncher")


# Every config group of conf/ (the ones whose options take a `_target_` are instantiated below).
GROUPS = [
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "data",
    "data/augmentation",
    "hparams_search",
    "debug",
]


def test_every_option_of_every_group_composes() -> None:
    conf = PROJECT / "conf"
    for group in GROUPS:
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
    archs = (
        OverridesParser.create().parse_override(f"model.arch={space['model.arch']}").value().list
    )
    for base in ([], ["experiment=demo"]):
        for arch in archs:
            model = compose(
                [*base, f"model.arch={arch}", "model.encoder_name=resnet18"], hydra_node=False
            ).model
            with torch.no_grad():
                logits = build_model(**model).eval()(torch.zeros(1, 3, 64, 64))
            assert logits.shape[-2:] == (64, 64), f"model.arch={arch} with {base or 'defaults'}"


def test_sweeps_started_in_the_same_second_get_their_own_directory(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    def sweep_config():
        return OmegaConf.create(
            {"dir": f"${{brainseg.fresh_dir:{tmp_path}/multiruns/2026-01-01_12-00-00}}"}
        )

    first, second = sweep_config(), sweep_config()
    assert (
        first.dir == f"{tmp_path}/multiruns/2026-01-01_12-00-00" and second.dir == f"{first.dir}-2"
    )
    assert first.dir == first.dir and Path(first.dir).is_dir() and Path(second.dir).is_dir()
    job = sweep_config()
    OmegaConf.copy_cache(
        from_config=first, to_config=job
    )  # what Hydra does for each job of a sweep
    assert job.dir == first.dir
    assert "brainseg.fresh_dir" in OmegaConf.to_yaml(compose([]).hydra.sweep)


def _build(group: str, cfg) -> list:
    """The objects one option of `group` stands for, built as the pipelines build them."""
    import torch
    from omegaconf import OmegaConf

    from brainseg.config import instantiate_setting, to_plain
    from brainseg.losses import build_loss
    from brainseg.models import build_model

    if group == "model":
        return [build_model(**to_plain(cfg.model))]
    if group == "loss":
        return [build_loss(**to_plain(cfg.loss))]
    if group == "experiment":
        return [
            build_model(**to_plain(cfg.model)),
            build_loss(**to_plain(cfg.loss)),
            instantiate_setting("data", cfg.data),
        ]
    optimizer = instantiate_setting(
        "optimizer", cfg.optimizer, params=[torch.nn.Parameter(torch.zeros(2))]
    )
    if group == "optimizer":
        return [optimizer]
    if group == "scheduler":
        factory = to_plain(cfg.scheduler).get("scheduler")
        if factory and "total_steps" in factory:
            factory["total_steps"] = 10  # OneCycleLR: filled in from the trainer in training
        return [instantiate_setting("scheduler", factory, optimizer=optimizer)] if factory else []
    if group == "trainer":  # on CPU: a GPU option's other settings unchanged
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer_cfg.update(accelerator="cpu", devices=1, sync_batchnorm=False)
        return [
            instantiate_setting("trainer", trainer_cfg, logger=False, enable_checkpointing=False)
        ]
    if group in ("logger", "callbacks"):
        return [
            instantiate_setting(group, node)
            for node in (cfg.get(group) or {}).values()
            if node is not None
        ]
    if group == "data":
        return [instantiate_setting("data", cfg.data)]
    from brainseg.data.datamodule import check_augmentation

    spec = check_augmentation(
        instantiate_setting("data.augmentation", cfg.data.augmentation, _convert_="all")
    )
    return [spec] if spec is not None else []


def _kinds(group: str) -> tuple[type, ...]:
    import albumentations
    import lightning as L
    import torch
    from lightning.pytorch.loggers import Logger

    return {
        "model": (torch.nn.Module,),
        "loss": (torch.nn.Module,),
        "experiment": (torch.nn.Module, torch.nn.Module, L.LightningDataModule),
        "optimizer": (torch.optim.Optimizer,),
        "scheduler": (
            torch.optim.lr_scheduler.LRScheduler,
            torch.optim.lr_scheduler.ReduceLROnPlateau,
        ),
        "trainer": (L.Trainer,),
        "logger": (Logger,),
        "callbacks": (L.Callback,),
        "data": (L.LightningDataModule,),
        "data/augmentation": (albumentations.Compose,),
    }[group]


INSTANTIATED = [g for g in GROUPS if g not in ("hparams_search", "debug")]


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, p.stem) for g in INSTANTIATED for p in sorted((PROJECT / "conf" / g).glob("*.yaml"))],
)
def test_every_option_of_every_group_instantiates(
    group: str, option: str, tmp_path: Path, monkeypatch, synthetic_root: Path
) -> None:
    """Not only composed: a misspelt `_target_` or argument in any option fails here."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose(
        [
            f"{group}={option}",
            f"paths.output_dir={tmp_path}",
            f"data.root={synthetic_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.encoder_weights=null",
        ],
        hydra_node=False,
    )
    built = _build(group, cfg)
    kinds = _kinds(group)
    expected = kinds if group == "experiment" else [kinds] * len(built)
    assert len(built) == len(expected) and all(isinstance(b, k) for b, k in zip(built, expected))
    assert built or (group, option) in {
        ("scheduler", "none"),
        ("callbacks", "none"),
        ("data/augmentation", "none"),
    }


def test_debug_preset_is_what_the_tests_train_with() -> None:
    cfg = compose(["debug=tiny", "experiment=reference"])
    assert (cfg.data.preprocess.image_size, cfg.model.encoder_depth, cfg.trainer.max_epochs) == (
        32,
        3,
        2,
    )
    assert cfg.data.split.n_val == 2 and cfg.trainer.accelerator == "cpu"


def test_debug_preset_network_is_small_enough_for_megabyte_checkpoints() -> None:
    """last.ckpt holds the weights and Adam's two moments: 4 bytes x 3 per parameter."""
    from omegaconf import OmegaConf

    from brainseg.models import build_model

    cfg = compose(["debug=tiny"], hydra_node=False)
    net = build_model(**OmegaConf.to_container(cfg.model, resolve=True))
    parameters = sum(p.numel() for p in net.parameters())
    assert parameters < 500_000, f"{parameters} parameters"  # before: 11.3 M (all of ResNet18)


@pytest.mark.parametrize(
    ("monitor", "mode", "direction"),
    [("val/dsc_volume", "max", "maximize"), ("val/hd95", "min", "minimize")],
)
def test_the_monitor_sets_every_direction(monitor: str, mode: str, direction: str) -> None:
    """The best checkpoint, the plateau scheduler and an Optuna search follow the metric's
    direction; a contradicting checkpoint mode and an unknown metric are refused in one line."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from brainseg.config import instantiate_setting
    from brainseg.errors import ConfigError

    cfg = compose([f"monitor={monitor}", "scheduler=plateau", "hparams_search=optuna"])
    assert cfg.scheduler.scheduler.mode == mode and cfg.hydra.sweeper.direction == direction
    checkpoint = {"_target_": cfg.callbacks.model_checkpoint._target_, "monitor": cfg.monitor}
    assert cfg.callbacks.model_checkpoint.mode is None and instantiate(checkpoint).mode == mode
    wrong = {"max": "min", "min": "max"}[mode]
    with pytest.raises(ConfigError, match=f"model_checkpoint.mode={wrong} contradicts"):
        instantiate_setting("callbacks.model_checkpoint", {**checkpoint, "mode": wrong})
    with pytest.raises(InterpolationResolutionError, match="monitor='val/dice': not a logged"):
        OmegaConf.to_container(
            compose(["monitor=val/dice", "scheduler=plateau"]).scheduler, resolve=True
        )


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (
            {"_target_": "torch.optim.SGD", "params": [], "lr": 0.1, "momentm": 0.9},
            "optimizer: SGD.__init__() got an unexpected keyword argument 'momentm'",
        ),
        ({"_target_": "torch.optim.Foo", "lr": 0.1}, "optimizer: cannot import _target_ "),
    ],
)
def test_instantiation_errors_name_the_reason_not_the_config_key(node, expected):
    """A misspelled key (Hydra's own suggestion `+trainer.max_epoch=3` ends this way) or an
    unknown target: one line with the reason, not `full_key: optimizer`."""
    from omegaconf import OmegaConf

    from brainseg.config import instantiate_setting
    from brainseg.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        instantiate_setting("optimizer", OmegaConf.create(node))
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "full_key" not in message and "\n" not in message


def test_predict_help_describes_every_setting() -> None:
    """`python predict.py --help` lists predict's own settings (not train.py's groups)."""
    cfg = compose([], config_name="predict")
    template = cfg.hydra.help.template
    settings = [key for key in cfg if key not in ("hydra", "task_name")]
    assert settings and all(f"\n  {key} " in template for key in settings if key != "figures")
    assert "figures.overlays" in template and "$APP_CONFIG_GROUPS" not in template


@pytest.mark.parametrize("script", ["train.py", "predict.py"])
def test_entry_points_start_without_torch(script: str) -> None:
    """--help and argument errors come before the heavy imports: the entry modules import no
    torch until their task runs."""
    import subprocess
    import sys

    code = (
        f"import runpy, sys; runpy.run_path({script!r}, run_name='not_main'); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
