"""Evaluation: official-parity DAVIS J/F metrics and reports."""
