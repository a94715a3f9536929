"""The smp factory: every listed architecture, any encoder, one logit channel, clear errors."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECT, compose
from omegaconf import OmegaConf

from brainseg.errors import ConfigError, DataError
from brainseg.models import build_model
from brainseg.models.factory import RECORDED_SETTINGS, recorded_model


def load(path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


# The smp class each config name must build (an alias mapped to the wrong network fails here).
REQUIRED = {
    "unet": "Unet",
    "unetpp": "UnetPlusPlus",
    "fpn": "FPN",
    "deeplabv3plus": "DeepLabV3Plus",
    "manet": "MAnet",
    "linknet": "Linknet",
    "pspnet": "PSPNet",
    "pan": "PAN",
    "upernet": "UPerNet",
    "segformer": "Segformer",
}


@pytest.mark.parametrize("arch", sorted(REQUIRED))
def test_every_architecture_builds_and_maps_3_channels_to_1_logit(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, encoder_name="resnet18").eval()
    assert type(model).__name__ == REQUIRED[arch]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert out.shape == (1, 1, 128, 128) and torch.isfinite(out).all()


def test_scse_attention_variant() -> None:
    model = build_model("unet", encoder_name="resnet18", decoder_attention_type="scse")
    assert any("SCSE" in type(m).__name__ for m in model.modules())


def test_other_encoders_by_name() -> None:
    model = build_model("unet", encoder_name="mobilenet_v2").eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"arch": "unett"},
            r"model.arch='unett' is unknown; choose one of \['deeplabv3', .*'unetpp'",
        ),
        (
            {"encoder_name": "resnet35"},
            r"model.encoder_name='resnet35' is unknown; choose one of .*resnet34",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(**kwargs)


def test_a_file_may_record_the_model_settings_conf_model_offers() -> None:
    """The settings a checkpoint's model is rebuilt with are those train.py composes for each
    conf/model/*.yaml (in_channels follows data.preprocess.context_slices)."""
    offered = {
        key
        for path in (PROJECT / "conf" / "model").glob("*.yaml")
        for key in compose([f"model={path.stem}"], hydra_node=False).model
    }
    assert set(RECORDED_SETTINGS) == offered
    for path in (PROJECT / "conf" / "model").glob("*.yaml"):
        assert recorded_model(load(path), path) == load(path)
    with pytest.raises(DataError, match=r"^x.ckpt: model.encoder_params=\{\} is no brainseg"):
        recorded_model({"arch": "unet", "encoder_params": {}}, "x.ckpt")
