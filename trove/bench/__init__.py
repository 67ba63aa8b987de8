"""Benchmarks run side by side with their peers (`trove bench query|ingest --json`).

Results and how to reproduce them: docs/benchmarks.md.
"""
