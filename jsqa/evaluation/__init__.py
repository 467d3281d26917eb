"""Evaluation: metrics with intervals, scoring test sets per model and seed, report tables."""
