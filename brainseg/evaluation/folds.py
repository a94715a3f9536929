"""Out-of-fold bookkeeping: which ensemble members (e.g. the folds of a k-fold sweep) never
trained on a patient, from each member's recorded split, so a patient is scored only by models
that held it out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Split = Mapping[str, Sequence[str]]  # {"train": [...], "val": [...], "test": [...]} as recorded in a checkpoint


def held_out_members(splits: Sequence[Split], patients: Iterable[str]) -> dict[str, list[int]]:
    """Per patient, the indices of the members whose split does not list it under `train`.

    A member that records no split is treated as having trained on nobody we can name, so it
    counts as holding every patient out; callers that need certainty check `split` themselves.
    """
    trained = [set(split.get("train") or ()) for split in splits]
    return {name: [i for i, seen in enumerate(trained) if name not in seen] for name in patients}

