"""Data: kaggle_3m reading, the reference preprocessing, cache, splits, sampling, DataModule."""

from brainseg.data.datamodule import LGGDataModule

__all__ = ["LGGDataModule"]
