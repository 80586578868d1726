"""Benchmarks (``python -m bench export``); never run inside the test suite."""
