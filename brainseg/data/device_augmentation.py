"""The device path's augmentation, built from the one augmentation spec (albumentations, as in
conf/data/augmentation/*.yaml): the same transforms on whole batches with kornia, each sample with
its own parameters, images and masks warped by one transform (masks nearest, so they stay 0/1).

Supported, with albumentations' parameters and conventions: Affine (scale, rotate, symmetric
translate_percent), HorizontalFlip, VerticalFlip, ElasticTransform, RandomBrightnessContrast,
RandomGamma, GaussNoise. Anything else is refused with one line naming the transform and
`data.loader=workers` (the albumentations path runs every transform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import kornia.augmentation as K
import torch
from kornia.augmentation import IntensityAugmentationBase2D

from brainseg.errors import ConfigError

INTERPOLATION = {0: "nearest", 1: "bilinear", 2: "bicubic"}  # cv2.INTER_* -> grid_sample mode
BORDER = {0: "zeros", 1: "border", 2: "reflection"}  # cv2.BORDER_* -> grid_sample padding_mode


def _refuse(transform: Any, detail: str = "") -> ConfigError:
    what = f"{type(transform).__name__}({detail})" if detail else type(transform).__name__
    return ConfigError(
        f"data.augmentation: {what} has no device version; use data.loader=workers "
        f"(the device path supports {', '.join(t.__name__ for t in BUILDERS)})"
    )


def _require(transform: Any, **expected: Any) -> None:
    """Refuse a transform whose setting differs from what the device version implements."""
    for name, value in expected.items():
        if getattr(transform, name) != value:
            raise _refuse(transform, f"{name}={getattr(transform, name)!r}")


def _sampling(transform: Any) -> dict[str, str]:
    """kornia's resample and padding_mode for an albumentations geometric transform."""
    if transform.interpolation not in INTERPOLATION:
        raise _refuse(transform, f"interpolation={transform.interpolation}")
    if transform.border_mode not in BORDER:
        raise _refuse(transform, f"border_mode={transform.border_mode}")
    _require(transform, mask_interpolation=0)  # masks nearest: they stay 0/1
    if transform.border_mode == 0:
        _require(transform, fill=0.0, fill_mask=0.0)
    return {
        "resample": INTERPOLATION[transform.interpolation],
        "padding_mode": BORDER[transform.border_mode],
    }


def _uniform(n: int, bounds: tuple[float, float], device: torch.device) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, 1, 1, 1, device=device)


class BrightnessContrast(IntensityAugmentationBase2D):
    """albumentations.RandomBrightnessContrast: `x * (1 + c) + b` (b scaled by the image mean
    unless by_max), clipped to [0, 1] as albumentations clips float images."""

    def __init__(
        self,
        brightness: tuple[float, float],
        contrast: tuple[float, float],
        by_max: bool,
        p: float,
    ) -> None:
        super().__init__(p=p)
        self.brightness, self.contrast, self.by_max = brightness, contrast, by_max

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        n = batch_shape[0]
        return {
            "alpha": 1 + _uniform(n, self.contrast, self.device),
            "beta": _uniform(n, self.brightness, self.device),
        }

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        beta = params["beta"].to(input)
        if not self.by_max:
            beta = beta * input.mean(dim=(1, 2, 3), keepdim=True)
        return (input * params["alpha"].to(input) + beta).clamp(0, 1)


class GaussNoise(IntensityAugmentationBase2D):
    """albumentations.GaussNoise: per sample a std and mean drawn from their ranges, noise per
    pixel (and per channel, or shared by the channels), clipped to [0, 1]."""

    def __init__(
        self,
        std_range: tuple[float, float],
        mean_range: tuple[float, float],
        per_channel: bool,
        p: float,
    ) -> None:
        super().__init__(p=p)
        self.std_range, self.mean_range, self.per_channel = std_range, mean_range, per_channel

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        n, channels, height, width = batch_shape
        noise = torch.randn(
            n, channels if self.per_channel else 1, height, width, device=self.device
        )
        std = _uniform(n, self.std_range, self.device)
        return {"noise": _uniform(n, self.mean_range, self.device) + std * noise}

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return (input + params["noise"].to(input)).clamp(0, 1)


class ElasticTransform(K.RandomElasticTransform):
    """albumentations.ElasticTransform: displacement noise Gaussian and divided by its largest
    magnitude (or uniform in [-1, 1]), blurred with OpenCV's kernel for `sigma`, times `alpha`
    pixels (converted to kornia's normalised coordinates for the batch's size)."""

    def __init__(self, transform: A.ElasticTransform, **sampling: str) -> None:
        sigma = float(transform.sigma)
        size = 17 if transform.approximate else round(8 * sigma + 1) | 1  # cv2, float input
        alpha = float(transform.alpha)
        super().__init__(
            kernel_size=(size, size),
            sigma=(sigma, sigma),
            alpha=(alpha, alpha),
            p=transform.p,
            **sampling,
        )
        self.gaussian = transform.noise_distribution == "gaussian"
        self.same_dxdy = transform.same_dxdy

    def generate_parameters(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        n, _, height, width = shape
        size = (n, 1 if self.same_dxdy else 2, height, width)
        if self.gaussian:
            noise = torch.randn(size, device=self.device, dtype=self.dtype)
            noise = noise / noise.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        else:
            noise = torch.rand(size, device=self.device, dtype=self.dtype) * 2 - 1
        return {"noise": noise.expand(n, 2, height, width)}

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        height, width = input.shape[-2:]
        alpha_x, alpha_y = flags["alpha"]  # pixels; grid_sample's coordinates span 2 per side
        flags = {**flags, "alpha": (2 * alpha_x / width, 2 * alpha_y / height)}
        return super().apply_transform(input, params, flags, transform)


def _affine(t: A.Affine) -> K.RandomAffine:
    _require(t, fit_output=False, balanced_scale=False)
    for name in ("shear", "translate_px"):
        if any(bound != 0 for bounds in (getattr(t, name) or {}).values() for bound in bounds):
            raise _refuse(t, f"{name}={getattr(t, name)}")
    translate = []
    for axis in ("x", "y"):
        low, high = (t.translate_percent or {}).get(axis, (0, 0))
        if low != -high:  # kornia draws translations symmetric about 0
            raise _refuse(t, f"translate_percent={t.translate_percent}")
        translate.append(high)
    scale = t.scale["x"] if t.keep_ratio else (*t.scale["x"], *t.scale["y"])
    low, high = t.rotate
    return K.RandomAffine(
        degrees=(-high, -low),  # albumentations' positive angle is kornia's negative one
        translate=tuple(translate) if any(translate) else None,
        scale=scale,
        p=t.p,
        **_sampling(t),
    )


def _brightness_contrast(t: A.RandomBrightnessContrast) -> BrightnessContrast:
    _require(t, ensure_safe_range=False)
    return BrightnessContrast(t.brightness_limit, t.contrast_limit, t.brightness_by_max, t.p)


def _gauss_noise(t: A.GaussNoise) -> GaussNoise:
    _require(t, noise_scale_factor=1.0)
    return GaussNoise(t.std_range, t.mean_range, t.per_channel, t.p)


def _gamma(t: A.RandomGamma) -> K.RandomGamma:
    low, high = t.gamma_limit
    return K.RandomGamma(gamma=(low / 100, high / 100), p=t.p)


BUILDERS: dict[type, Callable[[Any], torch.nn.Module]] = {
    A.Affine: _affine,
    A.HorizontalFlip: lambda t: K.RandomHorizontalFlip(p=t.p),
    A.VerticalFlip: lambda t: K.RandomVerticalFlip(p=t.p),
    A.ElasticTransform: lambda t: ElasticTransform(t, **_sampling(t)),
    A.RandomBrightnessContrast: _brightness_contrast,
    A.RandomGamma: _gamma,
    A.GaussNoise: _gauss_noise,
}


def device_augmentation(
    spec: A.BasicTransform | A.Compose | None,
) -> K.AugmentationSequential | None:
    """The kornia pipeline doing what the albumentations `spec` does, called as
    `pipeline(image, mask)` on (N, C, S, S) batches; None without any transform."""
    if spec is None:
        return None
    if type(spec) is A.Compose:
        _require(spec, p=1.0)
        transforms = list(spec.transforms)
    else:
        transforms = [spec]
    steps = []
    for transform in transforms:
        builder = BUILDERS.get(type(transform))
        if builder is None:
            raise _refuse(transform)
        steps.append(builder(transform))
    return K.AugmentationSequential(*steps, data_keys=["input", "mask"]) if steps else None
