"""LightningDataModule for the kaggle_3m layout: discovery, cached preprocessing, patient splits,
loaders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
from hydra.utils import to_absolute_path
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from brainseg.data.cache import VolumeCache
from brainseg.data.contract import DataProvenance
from brainseg.data.dataset import SliceDataset, normalize_batch
from brainseg.data.preprocess import PreprocessConfig, PreprocessedVolume
from brainseg.data.reader import PatientFiles, find_patients
from brainseg.data.sampling import SliceSampler, check_sampling
from brainseg.data.splits import Split, SplitConfig, make_split
from brainseg.errors import ConfigError
from brainseg.paths import check_outside_inputs, resolve_path
from brainseg.runfiles import SplitFile, write_split


def _seed_worker(worker_id: int) -> None:
    """Lightning's per-worker seeding, plus albumentations' own generators (not covered by it)."""
    pl_worker_init_function(worker_id)
    transform = getattr(torch.utils.data.get_worker_info().dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(np.random.randint(2**31)))


def check_augmentation(augmentation: Any) -> A.BasicTransform | A.BaseCompose | None:
    """The `data.augmentation` spec: an albumentations transform or Compose, or none."""
    if not augmentation:  # the `none` preset, or a Compose without transforms
        return None
    if not isinstance(augmentation, (A.BasicTransform, A.BaseCompose)):
        detail = f"keys {sorted(augmentation)}" if isinstance(augmentation, Mapping) else ""
        raise ConfigError(
            "data.augmentation must be an albumentations transform or Compose "
            f"(conf/data/augmentation/*.yaml), got {type(augmentation).__name__} {detail}".rstrip()
        )
    return augmentation


class LGGDataModule(L.LightningDataModule):
    """Patient-wise train/val/test loaders over preprocessed, cached LGG volumes
    (brainseg.data.contract.SegmentationData)."""

    def __init__(
        self,
        root: str,
        cache_dir: str,
        preprocess: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        sampling: str = "lesion_weighted",
        augmentation: A.BasicTransform | A.BaseCompose | None = None,
        loader: str | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        preprocess_workers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = resolve_path(to_absolute_path(str(root)), "data.root")
        self.cache_dir = Path(to_absolute_path(str(cache_dir)))
        check_outside_inputs(self.cache_dir, "data.cache_dir", {"data.root": self.root})
        self.preprocess_cfg = PreprocessConfig(**dict(preprocess or {}))
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1")
        self.split_config = SplitConfig.from_mapping(split)
        self.sampling = check_sampling(sampling)
        if loader is not None:  # kept (null) in conf/data/lgg.yaml so that old configs get this
            raise ConfigError(
                f"data.loader={loader!r}: the setting is gone; training data always goes through "
                "DataLoader workers (data.num_workers)"
            )
        self.augmentation = check_augmentation(augmentation)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.preprocess_workers = preprocess_workers
        self.seed = seed
        self.split: Split | None = None
        self.datasets: dict[str, SliceDataset] = {}

    def validate(self) -> tuple[Split, dict[str, PatientFiles]]:
        """The split and the patients' files: setup()'s checks, without reading any volume."""
        patients = {p.name: p for p in find_patients(self.root)}
        return make_split(self.split_config, list(patients)), patients

    def _load(self) -> tuple[Split, dict[str, PreprocessedVolume]]:
        """The split and its patients' volumes, preprocessed into the cache where missing."""
        split, patients = self.validate()
        names = split.train + split.val + split.test
        volumes = VolumeCache(self.cache_dir, self.preprocess_cfg).load_many(
            [patients[n] for n in names], self.preprocess_workers
        )
        return split, dict(zip(names, volumes))

    def prepare_data(self) -> None:
        """Fill the cache once (rank 0) before every rank loads it memory-mapped."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.split, volumes = self._load()
        if hasattr(self.augmentation, "set_random_seed"):
            self.augmentation.set_random_seed(self.seed)
        for subset in ("train", "val", "test"):
            names = getattr(self.split, subset) or self.split.val  # no test set: the validation
            transform = self.augmentation if subset == "train" else None
            self.datasets[subset] = SliceDataset(
                [volumes[n] for n in names], transform, self.preprocess_cfg.context_slices
            )

    def patient_names(self, subset: str) -> list[str]:
        """Names in the order of the `patient` index that the subset's samples carry."""
        return [v.name for v in self.datasets[subset].volumes]

    def provenance(self) -> DataProvenance:
        """The data part of a checkpoint's Provenance: root, preprocessing, split."""
        return {
            "data_root": str(self.root),
            "preprocess": self.preprocess_cfg.to_dict(),
            "split": asdict(self.split) if self.split is not None else {},
        }

    def write_split(self, run_dir: Path) -> None:
        write_split(
            run_dir,
            SplitFile(
                kind=self.split_config.kind,
                **asdict(self.split),
                root=str(self.root),
                n_inner_val=self.split_config.n_inner_val,
            ),
        )

    def on_after_batch_transfer(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> dict[str, torch.Tensor]:
        return normalize_batch(batch)

    def _loader(self, subset: str, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            self.datasets[subset],
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_seed_worker,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]
        return self._loader(
            "train",
            self.batch_size,
            sampler=SliceSampler(self.sampling, train.lesion_areas(), self.seed),
            drop_last=len(train) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size)
