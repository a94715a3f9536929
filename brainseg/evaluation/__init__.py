"""Evaluation: paired statistics between configurations, out-of-fold pooling (pure computation;
the per-volume metrics live in brainseg.metrics)."""
