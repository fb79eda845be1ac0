"""Evaluation after every stage: metrics, answer extraction, batched generation/scoring, the suite."""
