"""Segmentation networks: any segmentation-models-pytorch architecture and encoder by name."""

from brainseg.models.factory import ARCHITECTURES, build_model, encoder_names

__all__ = ["ARCHITECTURES", "build_model", "encoder_names"]
