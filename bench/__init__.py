"""Benchmarks of sb3-expo (run from the repository root: ``python -m bench.<name>``)."""
