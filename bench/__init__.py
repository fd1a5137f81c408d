"""Benchmarks of the deliverability guard: `python -m bench` (see bench/__main__.py)."""
