"""Inference: checkpoints or ONNX models to masks in the original geometry, TTA, ensembles."""
