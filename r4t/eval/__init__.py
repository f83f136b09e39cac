"""Evaluation: set metrics over query splits, confidence intervals, tables."""
