"""Reporting: per-patient score tables and the pictures people look at."""
