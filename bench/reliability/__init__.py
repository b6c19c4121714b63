"""Reliability benchmarks: kills under load (kill.py) and a bounded soak (soak.py)."""
