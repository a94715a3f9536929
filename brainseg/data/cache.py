"""On-disk cache of preprocessed volumes, keyed by the source files' sizes and times and the
settings: `<cache_dir>/<patient>-<key>/` is written whole (renamed into place) and loaded
memory-mapped, so a second start reads nothing but headers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from brainseg.data.preprocess import Geometry, PreprocessConfig, PreprocessedVolume, preprocess
from brainseg.data.reader import PatientFiles, read_patient
from brainseg.errors import ConfigError

CACHE_FORMAT = 3  # bump when the stored layout or the preprocessing code changes meaning


def cache_key(files: PatientFiles, cfg: PreprocessConfig) -> str:
    """Hash of the patient's file names, sizes and mtimes plus the preprocessing settings."""
    stats = []
    for path in files.images + (files.masks or ()):
        st = path.stat()
        stats.append((path.name, st.st_size, st.st_mtime_ns))
    config = {**cfg.to_dict(), "context_slices": 0}  # stacking happens after the cache
    payload = json.dumps({"format": CACHE_FORMAT, "config": config, "files": stats})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class VolumeCache:
    """Preprocessed volumes on disk; `load` preprocesses on a miss and maps the arrays on a hit."""

    def __init__(self, cache_dir: str | Path, cfg: PreprocessConfig) -> None:
        self.cache_dir = Path(cache_dir)
        self.cfg = cfg

    def _entry(self, files: PatientFiles) -> Path:
        return self.cache_dir / f"{files.name}-{cache_key(files, self.cfg)}"

    def load(self, files: PatientFiles, entry: Path | None = None) -> PreprocessedVolume:
        """The patient's preprocessed volume; `entry` skips recomputing a known cache key."""
        entry = entry or self._entry(files)
        if not (entry / "meta.json").exists():
            self._write(entry, preprocess(read_patient(files), self.cfg))
        meta = json.loads((entry / "meta.json").read_text())
        mask_path = entry / "mask.npy"
        return PreprocessedVolume(
            name=meta["name"],
            numbers=meta["numbers"],
            image=np.load(entry / "image.npy", mmap_mode="r"),
            mask=np.load(mask_path, mmap_mode="r") if mask_path.exists() else None,
            channel_mean=meta["channel_mean"],
            channel_std=meta["channel_std"],
            geometry=Geometry(**meta["geometry"]),
        )

    def load_many(self, patients: list[PatientFiles], workers: int = 1) -> list[PreprocessedVolume]:
        """`load` for several patients, preprocessing the misses in `workers` processes."""
        entries = [self._entry(p) for p in patients]
        missing = [(p, e) for p, e in zip(patients, entries) if not (e / "meta.json").exists()]
        if workers > 1 and len(missing) > 1:
            with ProcessPoolExecutor(min(workers, len(missing))) as pool:
                list(pool.map(self.load, *zip(*missing)))
        return [self.load(p, e) for p, e in zip(patients, entries)]

    def _write(self, entry: Path, volume: PreprocessedVolume) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"data.cache_dir={str(self.cache_dir)!r} cannot be created: {exc.strerror}"
            ) from None
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=self.cache_dir))
        try:
            np.save(tmp / "image.npy", np.rint(volume.image * 65535).astype(np.uint16))
            if volume.mask is not None:
                np.save(tmp / "mask.npy", volume.mask.astype(np.uint8))
            meta = {
                "name": volume.name,
                "numbers": volume.numbers,
                "channel_mean": volume.channel_mean,
                "channel_std": volume.channel_std,
                "geometry": asdict(volume.geometry),
                "preprocess": self.cfg.to_dict(),
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process wrote the same entry first
                if not (entry / "meta.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
