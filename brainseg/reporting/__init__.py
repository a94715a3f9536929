"""Reporting: per-patient score tables, scoring a folder of masks, the sweep report and the pictures
people look at."""
