"""The one error of the benchmarks: a benchmark cannot run, or its inputs disagree.

Also a ``RuntimeError``, so callers that catch that keep catching it. `trove bench`
prints the message and exits with status 2 (the table in ``trove.cli``).
"""

from __future__ import annotations

from core.errors import TroveError


class BenchError(TroveError, RuntimeError):
    """The benchmark cannot run or its inputs disagree; the message says why."""
