"""Volume inference: preprocess, batch through every member and TTA view, average probabilities,
map back to the original geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from brainseg.data.dataset import context_indices, zscore_channels_first
from brainseg.data.preprocess import PreprocessedVolume, preprocess, restore_geometry
from brainseg.data.reader import PatientVolume
from brainseg.errors import ConfigError, DataError
from brainseg.prediction.members import Member


@dataclass(frozen=True)
class View:
    """One test-time augmentation: optional horizontal flip, then rotation (degrees) and scale."""

    hflip: bool = False
    angle: float = 0.0
    scale: float = 1.0

    def _warp(self, x: torch.Tensor, angle: float, scale: float) -> torch.Tensor:
        if self.angle == 0 and self.scale == 1:
            return x
        bilinear = TF.InterpolationMode.BILINEAR
        return TF.affine(x, angle, [0, 0], scale, [0.0, 0.0], interpolation=bilinear)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.flip(-1) if self.hflip else images
        return self._warp(images, self.angle, self.scale)

    def backward(self, probs: torch.Tensor) -> torch.Tensor:
        probs = self._warp(probs, -self.angle, 1 / self.scale)  # rotation and scale commute
        return probs.flip(-1) if self.hflip else probs


def tta_views(
    hflip: bool = False, rotations: Sequence[float] = (), scales: Sequence[float] = ()
) -> list[View]:
    """The identity plus each requested augmentation (flips combined with the others)."""
    base = (
        [View()]
        + [View(angle=float(a)) for a in rotations]
        + [View(scale=float(s)) for s in scales]
    )
    if any(s <= 0 for s in scales):
        raise ConfigError(f"tta.scales={list(scales)} must be positive")
    return base + [View(True, v.angle, v.scale) for v in base] if hflip else base


class Predictor:
    """Averages sigmoid probabilities over members x views; members must preprocess identically."""

    def __init__(
        self,
        members: Sequence[Member],
        views: Sequence[View] = (View(),),
        batch_size: int = 16,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device, first = torch.device(device), members[0]
        for member in members:
            if member.preprocess != first.preprocess:
                raise ConfigError(
                    f"{member.path} preprocesses differently from {first.path}; "
                    "they cannot be ensembled"
                )
            if member.input_channels != member.preprocess.input_channels:
                raise DataError(
                    f"{member.path}: the network takes {member.input_channels} input channels, "
                    f"but its record stacks {member.preprocess.context_slices} neighbours on each "
                    f"side ({member.preprocess.input_channels} channels)"
                )
            if member.net is not None:  # an ONNX member runs on the CPU
                member.net.to(self.device)
        self.members = list(members)
        self.views = list(views)
        self.batch_size = batch_size
        self.preprocess_cfg = first.preprocess

    @torch.no_grad()
    def member_probabilities(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, S, S): one member's probabilities averaged over the views."""
        out = torch.zeros(images.shape[0], *images.shape[2:])
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            total = torch.zeros(batch.shape[0], 1, *batch.shape[2:], device=self.device)
            for view in self.views:
                total += view.backward(torch.sigmoid(member(view.forward(batch)).float()))
            out[start : start + batch.shape[0]] = (total / len(self.views))[:, 0].cpu()
        return out

    def preprocessed(self, volume: PatientVolume) -> tuple[PreprocessedVolume, torch.Tensor]:
        """Every slice preprocessed as in training and its z-scored (Z, C, S, S) network input."""
        pre = preprocess(volume, self.preprocess_cfg, every_slice=True)
        mean = torch.tensor(pre.channel_mean, dtype=torch.float32)
        std = torch.tensor(pre.channel_std, dtype=torch.float32)
        images = zscore_channels_first(torch.from_numpy(pre.image), mean, std)
        stacks = context_indices(len(images), self.preprocess_cfg.context_slices, volume.name)
        return pre, images[torch.from_numpy(stacks)].flatten(1, 2)

    def predict(self, volume: PatientVolume, members: Sequence[int] | None = None) -> np.ndarray:
        """Probabilities (Z, H, W) in the original geometry, averaged over the given members."""
        chosen = [self.members[i] for i in members] if members is not None else self.members
        if not chosen:
            raise ConfigError(f"{volume.name}: no ensemble member selected to predict it")
        pre, images = self.preprocessed(volume)
        probs = sum(self.member_probabilities(m, images) for m in chosen) / len(chosen)
        return restore_geometry(probs.numpy(), pre.geometry)
