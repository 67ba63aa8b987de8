"""The torch backend (sentence-transformers) passes the embedder conformance suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retrieval.embedding.torch_backend import TorchEmbedder
from tests.retrieval.embedding.conformance import EmbedderConformance


class TestTorchConformance(EmbedderConformance):
    backend = "torch"
    # One model for both sides: a query is the document vector of the same text.
    query_document_atol = 1e-5
    query_document_min_cosine = 0.9999

    def threads_used(self, embedder: Any, call: Callable[[], Any]) -> int:
        """torch's intra-op threads during each forward pass of the transformer."""
        import torch

        assert isinstance(embedder, TorchEmbedder)
        seen: list[int] = []
        handle = embedder._model[0].register_forward_hook(
            lambda *_: seen.append(torch.get_num_threads())
        )
        try:
            call()
        finally:
            handle.remove()
        assert seen, "the model never ran"
        return max(seen)
