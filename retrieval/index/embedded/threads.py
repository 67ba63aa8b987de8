"""One thread per query for the dense scans (BLAS and torch), restored afterwards.

A query's dense scan is one matrix-vector product: memory-bound, so a second
thread gains little on an idle machine and loses badly on a busy one. Measured
on the project's shared 2-core machines, numpy's float32 scan and torch's int8
kernel were both faster on one thread than on two
(docs/benchmarks.md#measured-alternatives-dense-first-pass). A server gets its
parallelism from concurrent queries instead; a query alone on a quiet machine
splits its int8 pass in two halves, each on one thread, the second on an idle
helper (:mod:`retrieval.parallel`): explicit threads that never spin, used only
while a core is free.

BLAS threads are limited through ``threadpoolctl`` when it is installed (a
scoped limit is cheap); without it BLAS keeps its default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

_lock = threading.Lock()
_controller: Any = None
_controller_loaded = False


def _blas_controller() -> Any:
    global _controller, _controller_loaded
    with _lock:
        if not _controller_loaded:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # optional: without it BLAS keeps its own thread count
                _controller = None
            else:
                _controller = ThreadpoolController()
            _controller_loaded = True
        return _controller


@contextmanager
def one_thread(torch: Any | None = None) -> Iterator[None]:
    """BLAS (and ``torch``, when given) on one thread inside the block."""
    with ExitStack() as stack:
        controller = _blas_controller()
        if controller is not None:
            stack.enter_context(controller.limit(limits=1, user_api="blas"))
        if torch is not None:
            previous = torch.get_num_threads()
            if previous != 1:
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, previous)
        yield
