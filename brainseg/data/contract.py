"""The dataset contract: what training and reporting read from a data module, besides Lightning's
loaders. A new dataset is a LightningDataModule with these members plus a conf/data/*.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

from brainseg.data.splits import Split
from brainseg.errors import ConfigError


class DataProvenance(TypedDict):
    """The data part of a checkpoint's provenance (brainseg.checkpoint.Provenance)."""

    data_root: str | None
    preprocess: dict[str, Any]
    split: dict[str, list[str]]


@runtime_checkable
class SegmentationData(Protocol):
    """Read by brainseg.training (module, report) after `setup`: patient names per subset, the
    split, the provenance stored in checkpoints, and the split file written into the run folder."""

    split: Split | None

    def patient_names(self, subset: str) -> list[str]:
        """Patient names of `subset` ("train", "val", "test"), indexed by the batches' `patient`."""

    def provenance(self) -> DataProvenance:
        """Data root, preprocessing settings and split, for predict.py to reproduce the inputs."""

    def write_split(self, run_dir: Path) -> None:
        """Write the run's split.json (brainseg.runfiles.write_split)."""


CONTRACT_MEMBERS = (
    *SegmentationData.__annotations__,
    *(n for n, v in vars(SegmentationData).items() if callable(v) and not n.startswith("_")),
)


def check_data_module(datamodule: Any) -> SegmentationData:
    """The data module itself, or a one-line ConfigError naming the contract members it lacks."""
    missing = [name for name in CONTRACT_MEMBERS if not hasattr(datamodule, name)]
    if missing:
        raise ConfigError(
            f"data: {type(datamodule).__name__} lacks {missing} of the dataset contract "
            "(brainseg.data.contract.SegmentationData)"
        )
    return datamodule
