"""One factory for every smp encoder-decoder: 3 input channels, 1 logit channel,
no downloads by default."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from torch import nn

from brainseg.errors import ConfigError

# model.arch values: smp's own architecture names, plus short aliases used in conf/model/*.yaml.
ALIASES = {"unetpp": "unetplusplus"}
ARCHITECTURES: dict[str, str] = {
    **{name: name for name in smp.MODEL_ARCHITECTURES_MAPPING},
    **ALIASES,
}


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
            f"{', '.join(encoder_names())} "
            "or a timm encoder as tu-<name>"
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
