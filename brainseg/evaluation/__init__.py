"""Evaluation: per-volume metrics, paired statistics between configurations, out-of-fold pooling."""
