"""Every per-volume metric from one pass over the evaluated slices: `probability > threshold`,
assembled into patient volumes, post-processed by a callable (metrics never import
postprocessing), each volume scored once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from brainseg.metrics.functional import NSD_TOLERANCE, volume_metrics

Postprocess = Callable[[np.ndarray], np.ndarray]


class VolumeMetrics(Metric):
    """Binarised slices keyed by (patient, slice): exact under DDP, where a DistributedSampler
    pads the last batch with repeated samples that must count once."""

    full_state_update = False

    def __init__(
        self,
        threshold: float = 0.5,
        postprocess: Postprocess | None = None,
        nsd_tolerance: float = NSD_TOLERANCE,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.postprocess = postprocess
        self.nsd_tolerance = nsd_tolerance
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
        batch, shape = probs.shape[0], (probs.shape[0], *probs.shape[-2:])
        self.pred.append((probs.detach() > self.threshold).reshape(shape).to(torch.uint8))
        self.target.append((target.detach() > 0.5).reshape(shape).to(torch.uint8))
        self.patient.append(patient.detach().reshape(batch).long())
        self.slice.append(slice_index.detach().reshape(batch).long())

    def volumes(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(post-processed prediction, truth) per patient id, in increasing order."""
        if isinstance(self.patient, list) and not self.patient:  # after a DDP sync: tensors
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
            volume = pred[rows] if self.postprocess is None else self.postprocess(pred[rows])
            volumes[int(pid)] = (volume, target[rows])
        return volumes

    def compute(self) -> dict[int, dict[str, float]]:
        """Patient id -> every metric of brainseg.metrics.functional.volume_metrics."""
        return {
            pid: volume_metrics(pred, truth, self.nsd_tolerance)
            for pid, (pred, truth) in self.volumes().items()
        }
