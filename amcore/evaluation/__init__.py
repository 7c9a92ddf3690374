"""Evaluation: scores, held-out baselines, tables and plots of trained models."""
