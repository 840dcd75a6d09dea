"""Benchmarks: each ``bench_*.py`` script prints its figures (medians, ratios vs a baseline)."""
