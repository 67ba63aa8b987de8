"""Work beside the caller on an idle core, never queued behind other queries.

One query is mostly two long steps that do not depend on each other (embedding
the query text and the lexical search) and one scan that splits in two (the
dense first pass). Both release the GIL. :class:`Beside` starts a step on a
shared helper thread and returns at once; :meth:`Beside.join` returns its result
and, when no helper has picked the step up yet (the helpers are busy with other
queries), cancels it and runs it in the calling thread instead. So a step never
waits behind another query's work: under concurrent load a query runs as it did
on one thread, and on a quiet machine it uses the idle core.

A helper is used only while fewer queries are being served (:func:`serving`)
than there are cores: with every core already answering a query of its own, a
step is cheaper in the caller's thread than handed over (measured:
docs/benchmarks.md#why-the-query-path-is-built-this-way). There are
``os.cpu_count() - 1`` helpers (none on one core: everything runs inline),
started on first use.

Usage::

    with serving():  # one query being answered in this thread
        lexical = Beside(index.search_lexical, query, principal, n)
    vector = embedder.encode_query(query)  # meanwhile, here
    hits = lexical.join()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


_active = 0  # threads inside serving()
_local = threading.local()


@contextmanager
def serving() -> Iterator[None]:
    """Count this thread as answering a query while inside (nested scopes count once)."""
    global _active
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        with _lock:
            _active += 1
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0:
            with _lock:
                _active -= 1


def queries_in_flight() -> int:
    """Threads answering a query right now (inside :func:`serving`)."""
    return _active


def helper_threads() -> int:
    """How many helper threads steps may run on: one per core beyond the caller's."""
    return max(0, (os.cpu_count() or 1) - 1)


def _helpers() -> ThreadPoolExecutor | None:
    global _pool, _pool_pid
    if helper_threads() == 0 or _active >= (os.cpu_count() or 1):
        return None  # no core to spare: run inline
    with _lock:
        # A forked child inherits the executor object but none of its threads.
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(helper_threads(), thread_name_prefix="trove-query-helper")
            _pool_pid = os.getpid()
        return _pool


class Beside(Generic[T]):
    """``fn(*args)`` started on a helper thread; :meth:`join` for its result."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self._fn = fn
        self._args = args
        pool = _helpers()
        self._future: Future[T] | None = pool.submit(fn, *args) if pool is not None else None

    @property
    def ran_beside(self) -> bool:
        """True once a helper thread took the step (False: it ran, or will run, inline)."""
        return self._future is not None and not self._future.cancelled()

    def join(self) -> T:
        """The step's result (its exception is raised here); runs it here if no helper has."""
        if self._future is None or self._future.cancel():
            self._future = None
            return self._fn(*self._args)
        return self._future.result()
