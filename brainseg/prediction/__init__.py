"""Inference: checkpoints (or ONNX models) to masks in the original geometry,
with TTA and ensembles."""
