"""Per-volume Dice, the number the LGG baseline is compared on.

A prediction is `probability > threshold`, assembled into patient volumes and post-processed by a
step list (brainseg.postprocessing; by default the reference's largest 3-D connected component,
face connectivity); Dice is then computed over each patient volume and averaged over patients.

Empty-set convention: if both the truth and the prediction of a volume are empty the Dice is 1.0
(nothing to find, nothing found); if exactly one is empty it is 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from brainseg.metrics.functional import dice_score
from brainseg.postprocessing import apply, check_steps

REFERENCE_POSTPROCESSING = ({"name": "largest_component"},)


class VolumeDice(Metric):
    """Accumulates binarised slices keyed by (patient, slice); `compute` assembles volumes.

    Keying by slice makes the result exact under DDP: a DistributedSampler pads the last batch
    with repeated samples, and a repeated (patient, slice) is counted once.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        threshold: float = 0.5,
        postprocessing: Sequence[Mapping[str, Any]] = REFERENCE_POSTPROCESSING,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.postprocessing = check_steps(postprocessing)
        self.add_state("pred", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("patient", default=[], dist_reduce_fx="cat")
        self.add_state("slice", default=[], dist_reduce_fx="cat")

    def update(
        self,
        probs: torch.Tensor,
        target: torch.Tensor,
        patient: torch.Tensor,
        slice_index: torch.Tensor,
    ) -> None:
        """probs, target: (B, [1,] H, W); patient, slice_index: (B,) integer ids."""
        batch = probs.shape[0]
        self.pred.append(
            (probs.detach() > self.threshold).reshape(batch, *probs.shape[-2:]).to(torch.uint8)
        )
        self.target.append(
            (target.detach() > 0.5).reshape(batch, *target.shape[-2:]).to(torch.uint8)
        )
        self.patient.append(patient.detach().reshape(batch).long())
        self.slice.append(slice_index.detach().reshape(batch).long())

    def volumes(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(binarised prediction, after the optional largest-component step; truth) per patient id,
        in increasing id order, slices in slice order."""
        if (
            isinstance(self.patient, list) and not self.patient
        ):  # after a DDP sync the states are tensors
            return {}
        pred = dim_zero_cat(self.pred).cpu().numpy().astype(bool)
        target = dim_zero_cat(self.target).cpu().numpy().astype(bool)
        patient = dim_zero_cat(self.patient).cpu().numpy()
        slices = dim_zero_cat(self.slice).cpu().numpy()
        keys = np.stack([patient, slices], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)  # sorted by (patient, slice)
        volumes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for pid in np.unique(patient[first]):
            rows = first[patient[first] == pid]
            volumes[int(pid)] = (apply(pred[rows], self.postprocessing), target[rows])
        return volumes

    def per_volume(self) -> dict[int, float]:
        """Dice per patient id, in increasing id order."""
        return {pid: dice_score(pred, target) for pid, (pred, target) in self.volumes().items()}

    def compute(self) -> dict[str, torch.Tensor]:
        scores = self.per_volume()
        values = torch.tensor(list(scores.values()), dtype=torch.float64)
        if values.numel() == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            return {
                "mean": nan,
                "median": nan,
                "per_volume": values,
                "patient": torch.zeros(0, dtype=torch.long),
            }
        return {
            "mean": values.mean(),
            "median": values.quantile(0.5),
            "per_volume": values,
            "patient": torch.tensor(list(scores), dtype=torch.long),
        }
