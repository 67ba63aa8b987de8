"""The ``onnx-int8`` backend (ONNX Runtime) passes the embedder conformance suite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from retrieval.embedding.onnx_backend import OnnxEmbedder
from tests.retrieval.embedding.conformance import EmbedderConformance


class _RecordingSession:
    """An ONNX Runtime session that notes which threads run it."""

    def __init__(self, inner: Any, threads: set[int]) -> None:
        self._inner = inner
        self._threads = threads

    def get_inputs(self) -> Any:
        return self._inner.get_inputs()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._threads.add(threading.get_ident())
        return self._inner.run(*args, **kwargs)


class TestOnnxInt8Conformance(EmbedderConformance):
    backend = "onnx-int8"
    # Queries run on the fp32 graph, documents on int8 weights: by design the two
    # differ by the documents' quantisation error (docs/benchmarks.md).
    query_document_atol = None
    query_document_min_cosine = 0.98

    def threads_used(self, embedder: Any, call: Callable[[], Any]) -> int:
        """Threads running the model side by side (each session runs on one thread)."""
        assert isinstance(embedder, OnnxEmbedder)
        embedder.warm_up()
        embedder.warm_up_queries()
        threads: set[int] = set()
        sessions = (embedder._loaded, embedder._query_loaded)
        embedder._loaded = _RecordingSession(sessions[0], threads)
        embedder._query_loaded = _RecordingSession(sessions[1], threads)
        try:
            call()
        finally:
            embedder._loaded, embedder._query_loaded = sessions
        assert threads, "the model never ran"
        return len(threads)
