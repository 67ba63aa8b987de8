"""Progress reporting for long stages, decoupled from any UI.

Stages call :func:`report`; the CLI installs a sink that draws progress bars.
Dagster runs without a sink (its own event log shows the step timings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    def start(self, task: str, total: int) -> None: ...
    def advance(self, task: str, amount: int = 1) -> None: ...
    def finish(self, task: str) -> None: ...


_sink: ProgressSink | None = None

# ``advance()`` or ``advance(n)``: n more of the task's items are done.
Advance = Callable[..., None]


def set_sink(sink: ProgressSink | None) -> None:
    global _sink
    _sink = sink


@contextmanager
def task(name: str, total: int) -> Iterator[Advance]:
    """``with task("parse", n) as advance: ... advance()``; a no-op without a sink."""
    sink = _sink
    if sink is None or total <= 0:
        yield lambda amount=1: None
        return
    sink.start(name, total)
    try:
        yield lambda amount=1: sink.advance(name, amount)
    finally:
        sink.finish(name)
