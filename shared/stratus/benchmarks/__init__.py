"""Benchmarks run by `stratus bench <name>`."""
