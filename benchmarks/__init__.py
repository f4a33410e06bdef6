"""Reproducible benchmarks (not tests): run with ``python -m benchmarks.<name>``."""
