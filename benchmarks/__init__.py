"""Benchmark scripts: run from the repository root, e.g. ``python -m benchmarks.gn_step --help``."""
