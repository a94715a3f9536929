"""The reference preprocessing protocol (docs/configuration.md), one switchable step at a time,
with a record to undo the geometry. The z-score statistics are computed here but applied at load
time, so that intensity augmentations work on [0, 1] images."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from brainseg.data.reader import PatientVolume
from brainseg.errors import ConfigError

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Switches for each protocol step; the defaults are the reference protocol."""

    drop_end_slices: bool = True
    crop_to_brain: bool = True
    crop_threshold: float = 0.1
    pad_square: bool = True
    image_size: int | None = 256
    # OpenCV has no biquadratic (order 2) resize; bicubic per slice is the fast stand-in.
    interpolation: str = "cubic"
    rescale_percentiles: tuple[float, float] | None = (10.0, 99.0)
    zscore: bool = True
    # 2.5-D input: each slice with k neighbours on each side as extra channels, 3 * (2k + 1) in
    # all (the ends repeat their last neighbour). Not a preprocessing step: it is recorded here,
    # with the protocol, so that predict.py and ONNX exports stack slices as training did.
    context_slices: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"data.preprocess.interpolation={self.interpolation!r} is unknown; "
                f"choose one of {sorted(INTERPOLATIONS)}"
            )
        if not isinstance(self.context_slices, int) or not 0 <= self.context_slices <= 8:
            raise ConfigError(
                f"data.preprocess.context_slices={self.context_slices!r} must be an integer "
                "from 0 to 8"
            )
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"data.preprocess.image_size={self.image_size} must be >= 8 or null")
        if not 0 <= self.crop_threshold < 1:
            raise ConfigError(
                f"data.preprocess.crop_threshold={self.crop_threshold} must be in [0, 1)"
            )
        if self.rescale_percentiles is not None:
            low, high = self.rescale_percentiles
            if not 0 <= low < high <= 100:
                raise ConfigError(
                    f"data.preprocess.rescale_percentiles={list(self.rescale_percentiles)} "
                    "must be two increasing values in [0, 100]"
                )
            object.__setattr__(self, "rescale_percentiles", (float(low), float(high)))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def input_channels(self) -> int:
        """The network's input channels: three per slice of the stack."""
        return 3 * (2 * self.context_slices + 1)


@dataclass
class Geometry:
    """Where the preprocessed volume sits in the original one, to map predictions back."""

    original_shape: tuple[int, int, int]  # (Z, H, W) of the input volume
    slice_indices: list[int]  # original slice indices (0-based) that were kept, in order
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the in-plane crop
    pad: tuple[int, int, int, int]  # top, bottom, left, right zero padding after the crop

    def __post_init__(self) -> None:  # JSON gives lists back
        for name in ("original_shape", "box", "pad"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.slice_indices = [int(v) for v in self.slice_indices]

    @property
    def padded_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.box
        top, bottom, left, right = self.pad
        return (y1 - y0 + top + bottom, x1 - x0 + left + right)


@dataclass
class PreprocessedVolume:
    """Images (Z, S, S, 3) in [0, 1]: float32 from `preprocess`, uint16 (x 65535) from the cache;
    masks (Z, S, S) uint8, z-score statistics, geometry."""

    name: str
    numbers: list[int]  # slice numbers (from the file names) of the kept slices
    image: np.ndarray
    mask: np.ndarray | None
    channel_mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    channel_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    geometry: Geometry | None = None

    def slice_image(self, z: int) -> np.ndarray:
        """Slice z as (S, S, 3) float32 in [0, 1], whatever the storage type."""
        if self.image.dtype == np.uint16:
            return np.multiply(self.image[z], np.float32(1 / 65535), dtype=np.float32)
        return np.asarray(self.image[z], dtype=np.float32)


def _brain_box(image: np.ndarray, threshold: float) -> tuple[float, tuple[int, ...]]:
    """The cut-off under which voxels are zeroed (threshold x max) and the 3-D box of the rest."""
    # uint8 v < t  <=>  v <= ceil(t) - 1: THRESH_TOZERO keeps values above that
    cutoff = float(np.ceil(image.max() * threshold)) - 1
    _zero_below(image, cutoff)
    nonzero = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2]) > 0
    box = ndimage.find_objects(nonzero.view(np.uint8)) or [[slice(0, n) for n in nonzero.shape]]
    return cutoff, tuple(end for axis in box[0] for end in (axis.start, axis.stop))


def _zero_below(image: np.ndarray, cutoff: float) -> None:
    """Zero the uint8 voxels <= cutoff, in place."""
    flat = image.reshape(-1, image.shape[2], image.shape[3])  # OpenCV takes (rows, cols, channels)
    cv2.threshold(flat, cutoff, 0, cv2.THRESH_TOZERO, dst=flat)


def _square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding that makes the slice square, floor before ceil."""
    diff = abs(height - width)
    low, high = diff // 2, diff - diff // 2
    return (low, high, 0, 0) if width > height else (0, 0, low, high)


def resize_slices(volume: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize each slice of (Z, H, W[, C]) to `size` (H, W) with OpenCV."""
    out = np.empty((volume.shape[0], *size, *volume.shape[3:]), volume.dtype)
    for z in range(volume.shape[0]):
        out[z] = cv2.resize(volume[z], (size[1], size[0]), interpolation=interpolation)
    return out


def preprocess(
    volume: PatientVolume, cfg: PreprocessConfig, every_slice: bool = False
) -> PreprocessedVolume:
    """Apply the protocol to one patient volume. `every_slice=True` (inference) keeps the slices
    the protocol drops too, but fits everything on the kept ones, which come out as in training."""
    image, mask = volume.image, volume.mask
    z_count, height, width = image.shape[:3]
    kept = np.arange(z_count)
    if cfg.drop_end_slices and z_count > 2:
        kept = kept[1:-1]
    indices = np.arange(z_count) if every_slice else kept
    image = image[indices]  # a copy: the brain crop writes zeros into it
    mask = None if mask is None else mask[indices]
    box = (0, image.shape[1], 0, image.shape[2])
    if cfg.crop_to_brain:
        offset = int(kept[0]) - int(indices[0])  # where the protocol's slices start in `image`
        cutoff, (z0, z1, y0, y1, x0, x1) = _brain_box(
            image[offset : offset + len(kept)], cfg.crop_threshold
        )
        kept = kept[z0:z1]
        if every_slice:
            _zero_below(image, cutoff)
        else:
            image, indices = image[z0:z1], indices[z0:z1]
            mask = None if mask is None else mask[z0:z1]
        image = image[:, y0:y1, x0:x1]
        mask = None if mask is None else mask[:, y0:y1, x0:x1]
        box = (y0, y1, x0, x1)
    fitted = (
        slice(int(kept[0]) - int(indices[0]), int(kept[-1]) - int(indices[0]) + 1)
        if len(kept)
        else slice(None)
    )
    pad = (0, 0, 0, 0)
    if cfg.pad_square:
        pad = _square_padding(image.shape[1], image.shape[2])
        if any(pad):
            spec = ((0, 0), pad[:2], pad[2:])
            image = np.pad(image, (*spec, (0, 0)))
            mask = None if mask is None else np.pad(mask, spec)
    image = image.astype(np.float32) / 255.0
    if cfg.image_size is not None:
        size = (cfg.image_size, cfg.image_size)
        image = resize_slices(image, size, INTERPOLATIONS[cfg.interpolation])
        mask = None if mask is None else resize_slices(mask, size, cv2.INTER_NEAREST)
    if cfg.rescale_percentiles is not None:
        low, high = np.percentile(image[fitted], cfg.rescale_percentiles)
        image -= low
        image *= 1.0 / max(high - low, 1e-8)
        np.clip(image, 0.0, 1.0, out=image)
    mean, std = [0.0] * 3, [1.0] * 3
    if cfg.zscore:
        # float64 accumulation, fast
        m, s = cv2.meanStdDev(image[fitted].reshape(-1, image.shape[2], 3))
        mean = m.ravel().tolist()
        std = [v if v > 1e-8 else 1.0 for v in s.ravel().tolist()]
    geometry = Geometry(
        original_shape=(z_count, height, width),
        slice_indices=indices.tolist(),
        box=box,
        pad=pad,
    )
    numbers = [volume.numbers[i] for i in indices]
    return PreprocessedVolume(volume.name, numbers, image, mask, mean, std, geometry)


def restore_geometry(probs: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Map (Zk, S, S) probabilities of the kept slices back onto the original (Z, H, W) grid;
    dropped slices and voxels outside the brain box get 0."""
    out = np.zeros(geometry.original_shape, np.float32)
    if not geometry.slice_indices:
        return out
    resized = resize_slices(probs.astype(np.float32), geometry.padded_shape, cv2.INTER_LINEAR)
    top, bottom, left, right = geometry.pad
    height, width = geometry.padded_shape
    y0, y1, x0, x1 = geometry.box
    out[geometry.slice_indices, y0:y1, x0:x1] = resized[
        :, top : height - bottom, left : width - right
    ]
    return out
