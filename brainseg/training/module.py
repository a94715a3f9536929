"""LightningModule: any smp network, a pluggable loss, per-volume Dice as the monitored metric."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from brainseg.config import instantiate_setting
from brainseg.data.contract import SegmentationData
from brainseg.errors import ConfigError
from brainseg.losses import build_loss
from brainseg.metrics import METRICS, NSD_TOLERANCE, VolumeMetrics, slice_metrics
from brainseg.models import build_model
from brainseg.postprocessing import apply, check_steps


class SegmentationModule(L.LightningModule):
    """Binary lesion segmentation; all arguments are plain config dicts, saved with the checkpoint
    (brainseg.prediction.members.load_checkpoint rebuilds the network from them without Hydra)."""

    def __init__(
        self,
        model: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        metric: Mapping[str, Any] | None = None,
        postprocessing: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(**model)
        self.loss = build_loss(**loss)
        metric = dict(metric or {})
        threshold = metric.get("threshold", 0.5)
        postprocess = functools.partial(apply, steps=check_steps(postprocessing))
        nsd_tolerance = float(metric.get("nsd_tolerance", NSD_TOLERANCE))
        stages = ("val", "test")
        self.volume_metrics = torch.nn.ModuleDict(
            {s: VolumeMetrics(threshold, postprocess, nsd_tolerance) for s in stages}
        )
        self.slice_metrics = torch.nn.ModuleDict({s: slice_metrics(threshold) for s in stages})
        self.volume_scores: dict[str, dict[str, float]] = {}  # [stage][patient name] -> Dice
        self.volume_details: dict[str, dict[str, dict[str, float]]] = {}  # [stage][patient][metric]

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> SegmentationModule:
        """Refused: it would pass a file's hyper-parameters to `__init__`, which instantiates
        any `_target_` they name (a loss term)."""
        raise NotImplementedError(
            "SegmentationModule.load_from_checkpoint would run code a checkpoint names; "
            "use brainseg.prediction.members.load_checkpoint (network and provenance)"
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.net(image)
        if logits.shape[-2:] != image.shape[-2:]:
            model = self.hparams.model
            raise ConfigError(
                f"model (arch={model.get('arch')!r}, "
                f"encoder_depth={model.get('encoder_depth', 5)}) returns "
                f"{tuple(logits.shape[-2:])} logits for {tuple(image.shape[-2:])} images; "
                "choose another model.encoder_depth or data.preprocess.image_size"
            )
        return logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        parts = self.loss.components(logits, batch["mask"])
        total = self.loss.combine(parts)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        self.log("epoch", float(self.current_epoch + 1), batch_size=batch_size)  # from 1, as shown
        if len(parts) > 1:
            self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=batch_size)
        return total

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Update the stage's metrics; the probabilities returned are drawn by TrackerMedia."""
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        probs = torch.sigmoid(logits.float())
        self.volume_metrics[stage].update(probs, batch["mask"], batch["patient"], batch["slice"])
        self.slice_metrics[stage].update(probs.flatten(1), batch["mask"].flatten(1).int())
        self.log(f"{stage}/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        return probs

    def _end_of_evaluation(self, stage: str) -> None:
        per_patient = self.volume_metrics[stage].compute()  # every rank's slices
        self.volume_metrics[stage].reset()
        slice_values = {k: v.float().mean() for k, v in self.slice_metrics[stage].compute().items()}
        self.slice_metrics[stage].reset()
        dice = torch.tensor([m["dsc"] for m in per_patient.values()], dtype=torch.float64)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        self.log(f"{stage}/dsc_volume", dice.mean().float(), prog_bar=True)
        self.log("epoch", float(self.current_epoch + 1))
        self.log(f"{stage}/dsc_volume_median", (dice.quantile(0.5) if len(dice) else nan).float())
        self.log_dict({f"{stage}/{k}": v for k, v in slice_values.items()})
        datamodule: SegmentationData | None = getattr(self.trainer, "datamodule", None)
        names = datamodule.patient_names(stage) if datamodule is not None else None
        details = {(names[p] if names else str(p)): m for p, m in per_patient.items()}
        self.volume_details[stage] = details
        self.volume_scores[stage] = {name: float(m["dsc"]) for name, m in details.items()}
        if details:  # the per-volume metrics but the Dice (logged above), as patient means
            means = {k: np.mean([d[k] for d in details.values()]) for k in METRICS[1:]}
            self.log_dict({f"{stage}/{k}": float(v) for k, v in means.items()})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_of_evaluation("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_of_evaluation("test")

    def configure_optimizers(self) -> Any:
        optimizer = instantiate_setting(
            "optimizer", dict(self.hparams.optimizer), params=self.parameters()
        )
        scheduler_cfg = dict(self.hparams.scheduler or {})
        if not scheduler_cfg.get("scheduler"):
            return optimizer
        factory = dict(scheduler_cfg["scheduler"])
        if "total_steps" in factory and factory["total_steps"] is None:  # OneCycleLR
            factory["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate_setting("scheduler", factory, optimizer=optimizer)
        # `interval`, `monitor` (and Lightning's other scheduler keys) as the setting gives them
        return {"optimizer": optimizer, "lr_scheduler": {**scheduler_cfg, "scheduler": scheduler}}
