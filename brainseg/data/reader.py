"""Reading the kaggle_3m layout: one folder per patient, `<patient>_<n>.tif` slices and
`_mask.tif` masks (`.tif` or `.tiff`, in any case)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from brainseg.errors import DataError

_SLICE_RE = re.compile(r"(?i)^(?P<patient>.+)_(?P<n>\d+)(?P<mask>_mask)?(?P<ext>\.tiff?)$")
IMAGE_NAME = r"\g<patient>_\g<n>\g<ext>"  # the image of a mask file
MASK_VALUES = ({0, 255}, {0, 1})  # kaggle_3m masks, or already binary ones
log = logging.getLogger("brainseg")


@dataclass(frozen=True)
class PatientFiles:
    """One patient's slice files in order (`masks` None: inference only); `name` is the id the
    files carry, so that splits follow a patient into a renamed folder."""

    name: str
    folder: Path
    numbers: tuple[int, ...]
    images: tuple[Path, ...]
    masks: tuple[Path, ...] | None


@dataclass
class PatientVolume:
    """A patient's raw volume: images (Z, H, W, 3) uint8 and masks (Z, H, W) uint8 in {0, 1}."""

    name: str
    numbers: tuple[int, ...]
    image: np.ndarray
    mask: np.ndarray | None


def _slice_files(folder: Path) -> tuple[dict[int, Path], dict[int, Path], str]:
    """Slice number -> image file and -> mask file of one patient folder, and its patient."""
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    prefixes: dict[Path, str] = {}
    for path in sorted(folder.iterdir()):
        match = _SLICE_RE.match(path.name)
        if not match or not path.is_file():
            continue
        found = masks if match["mask"] else images
        number = int(match["n"])
        if number in found:  # e.g. _5 and _05: directory order would pick one
            raise DataError(f"{found[number]} and {path.name}: two files for slice {number}")
        found[number] = path
        prefixes[path] = match["patient"]
    return images, masks, _check_one_patient(folder, prefixes)


def scan_masks(folder: Path) -> dict[int, Path]:
    """Slice number -> mask file of a folder of predicted masks, checked as a data folder."""
    return _slice_files(folder)[1]


def scan_patient(folder: Path, require_masks: bool = True) -> PatientFiles:
    """A patient folder's slices in numeric order (2 before 10), checking pairing and gaps."""
    images, masks, patient = _slice_files(folder)
    if not images and not masks:
        raise DataError(f"{folder}: no slice files (<patient>_<n>.tif) in patient folder")
    for n in sorted(set(masks) - set(images)):
        raise DataError(f"{masks[n]}: mask has no image {_SLICE_RE.sub(IMAGE_NAME, masks[n].name)}")
    has_masks = bool(masks)
    if require_masks or has_masks:
        for n in sorted(set(images) - set(masks)):
            raise DataError(
                f"{images[n]}: image has no mask {images[n].stem}_mask{images[n].suffix}"
            )
    numbers = sorted(images)
    expected = list(range(numbers[0], numbers[0] + len(numbers)))
    if numbers != expected:
        missing = min(set(expected) - set(numbers))
        raise DataError(f"{folder}: slice {missing} is missing (slice numbers must be consecutive)")
    if patient != folder.name:
        log.warning("%s: its files name patient %s, who it is taken for", folder, patient)
    return PatientFiles(
        name=patient,
        folder=folder,
        numbers=tuple(numbers),
        images=tuple(images[n] for n in numbers),
        masks=tuple(masks[n] for n in numbers) if has_masks else None,
    )


def _check_one_patient(folder: Path, prefixes: dict[Path, str]) -> str:
    """The patient of a folder's slices: its name, or (renamed) the prefix most files carry."""
    counts = Counter(prefixes.values())
    patient = folder.name if folder.name in counts or not counts else counts.most_common(1)[0][0]
    if len(counts) < 2:
        return patient
    stray = next(path for path, prefix in prefixes.items() if prefix != patient)
    raise DataError(
        f"{stray}: slice of patient {prefixes[stray]}, not of {patient} "
        f"(the other slices of {folder.name})"
    )


def find_patients(root: str | Path, require_masks: bool = True) -> list[PatientFiles]:
    """All patient folders under a data root, sorted; a root holding slice files is one patient.
    A root holding both, or two folders of one patient (a copy), is refused."""
    root = Path(root)
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"{root}: data root {problem}")
    slices = [p for p in sorted(root.iterdir()) if _SLICE_RE.match(p.name)]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    folders = [f for f in folders if any(_SLICE_RE.match(p.name) for p in f.iterdir())]
    if slices and folders:
        raise DataError(
            f"{slices[0]}: a slice file beside the patient folders ({folders[0].name}, "
            "...) of the data root; move it into its patient's folder"
        )
    patients = [scan_patient(f, require_masks) for f in folders or [root] * bool(slices)]
    if not patients:
        raise DataError(
            f"{root}: no patient folders with .tif slices (expected the kaggle_3m layout)"
        )
    seen: dict[str, Path] = {}
    for files in patients:
        if seen.setdefault(files.name, files.folder) != files.folder:
            raise DataError(
                f"{seen[files.name]} and {files.folder}: two folders of patient "
                f"{files.name} (a copy?); keep one"
            )
    return patients


def _read_tif(path: Path) -> np.ndarray:
    try:
        return tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise DataError(f"{path}: unreadable tif ({type(exc).__name__}: {exc})") from None


def read_image(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One slice as (H, W, 3) uint8; `shape` enforces the patient's common H, W."""
    image = _read_tif(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{path}: expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    if shape is not None and image.shape[:2] != shape:
        raise DataError(
            f"{path}: slice is {image.shape[:2]}, other slices of the patient are {shape}"
        )
    return image


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """One mask as (H, W) uint8 in {0, 1}; accepts 0/255 (kaggle_3m) or 0/1."""
    mask = _read_tif(path)
    if mask.ndim == 3 and mask.shape[2] in (3, 4):  # some exports store grey masks as RGB
        mask = mask[..., 0]
    if mask.dtype != np.uint8 or mask.shape != shape:
        raise DataError(
            f"{path}: expected an {shape[0]}x{shape[1]} uint8 mask, got {mask.shape} {mask.dtype}"
        )
    values = set(np.unique(mask).tolist())
    if not any(values <= allowed for allowed in MASK_VALUES):
        raise DataError(
            f"{path}: mask values {sorted(values)[:8]}; expected {{0, 255}} or {{0, 1}}"
        )
    return (mask > 0).astype(np.uint8)


def read_patient(files: PatientFiles) -> PatientVolume:
    """Read every slice of a patient into one volume."""
    first = read_image(files.images[0])
    shape = first.shape[:2]
    image = np.stack([first, *(read_image(path, shape) for path in files.images[1:])])
    mask = None
    if files.masks is not None:
        mask = np.stack([read_mask(p, shape) for p in files.masks])
        if mask.any() and not image.any():
            log.warning(
                "patient %s (%s): the image volume is all black but its masks hold a lesion",
                files.name,
                files.folder,
            )
    return PatientVolume(files.name, files.numbers, image, mask)
