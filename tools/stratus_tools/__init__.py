"""Stratus operator tooling: the CLI, the local stack, benchmarks, evaluation (never in a Lambda)."""
