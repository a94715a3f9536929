"""One factory for every smp encoder-decoder: 1 logit channel, no downloads by default."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
from torch import nn

from brainseg.errors import ConfigError, DataError

# model.arch values: smp's own architecture names, plus short aliases used in conf/model/*.yaml.
ALIASES = {"unetpp": "unetplusplus"}
ARCHITECTURES: dict[str, str] = {name: name for name in smp.MODEL_ARCHITECTURES_MAPPING} | ALIASES


def _whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


# The settings conf/model/*.yaml offer, and what a file may record for each: a model is rebuilt
# from a file with these only (anything else, e.g. timm's pretrained_cfg_overlay and its URL, is
# refused). Widths are bounded so that a file cannot ask for terabytes.
RECORDED_SETTINGS: dict[str, Callable[[Any], bool]] = {
    "arch": lambda v: v in ARCHITECTURES,
    "encoder_name": lambda v: isinstance(v, str),
    "encoder_weights": lambda v: v is None or isinstance(v, str),
    "encoder_depth": _whole(1, 5),
    "decoder_channels": lambda v: isinstance(v, list) and all(map(_whole(1, 4096), v)),
    "decoder_attention_type": lambda v: v in (None, "scse"),
    "in_channels": lambda v: v in (3 * (2 * k + 1) for k in range(9)),  # a 2.5-D stack's
}


def recorded_model(settings: Any, source: str | Path) -> dict[str, Any]:
    """The model settings a file records, checked: anything else is a DataError naming the file and
    the setting (build with `encoder_weights=None`: the weights come from the file)."""
    if not isinstance(settings, Mapping):
        raise DataError(f"{source}: model settings are not a mapping")
    for key, value in settings.items():
        if key not in RECORDED_SETTINGS or not RECORDED_SETTINGS[key](value):
            raise DataError(f"{source}: model.{key}={value!r:.80} is no brainseg model setting")
    return dict(settings)


def encoder_names() -> list[str]:
    """smp's native encoders; timm encoders are also accepted as `tu-<timm name>`."""
    return sorted(smp.encoders.get_encoder_names())


def build_model(
    arch: str = "unet",
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """`smp.create_model` with config-level validation and one-line errors for unknown names."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={arch!r} is unknown; choose one of {sorted(ARCHITECTURES)}")
    if not encoder_name.startswith("tu-") and encoder_name not in encoder_names():
        raise ConfigError(
            f"model.encoder_name={encoder_name!r} is unknown; choose one of "
            f"{', '.join(encoder_names())} or a timm encoder as tu-<name>"
        )
    try:
        return smp.create_model(
            ARCHITECTURES[arch],
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **kwargs,
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model (arch={arch!r}, encoder_name={encoder_name!r}): {message}"
        ) from None
