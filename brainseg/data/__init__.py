"""Data: kaggle_3m reading, the reference preprocessing, cache, splits, sampling, DataModule
(brainseg.data.datamodule, kept out of this package's import so inference needs no Lightning)."""
