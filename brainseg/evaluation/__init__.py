"""Evaluation helpers shared by predict.py and the sweep report."""
