"""Peers of ``trove bench query``, timed on the same chunks, vectors and queries.

* ``rank_bm25_lexical``: ``rank_bm25.BM25Okapi(tokenized).get_scores(query)``, with
  Trove's own analyzer as tokenizer (the lexical oracle of the tests).
* ``llamaindex_fusion``: LlamaIndex ``QueryFusionRetriever`` over ``BM25Retriever``
  (llama-index-retrievers-bm25) and a ``VectorStoreIndex`` (``SimpleVectorStore``)
  holding the same vectors, reciprocal-rank fusion, ``num_queries=1`` and a
  ``MockLLM`` (no query generation, no LLM). Its embed model returns the real
  MiniLM query embedding, so query embedding is timed for both systems. It has
  no permission filter: that makes its job easier, not harder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.index.base import ChunkRecord
from trove.bench.query_serve import percentiles, timed


def rank_bm25_peer(records: Sequence[ChunkRecord], queries: list[str]) -> dict[str, Any]:
    from rank_bm25 import BM25Okapi

    from retrieval.analysis import analyze

    t0 = time.perf_counter()
    bm25 = BM25Okapi([analyze(r.text) for r in records])
    build_s = time.perf_counter() - t0
    times = timed(lambda q: bm25.get_scores(analyze(q)), queries)
    return {**percentiles(times), "queries": len(queries), "build_s": round(build_s, 1)}


def llamaindex_peer(
    records: Sequence[ChunkRecord], queries: list[str], embedder: Any
) -> dict[str, Any]:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever
    from pydantic import PrivateAttr

    class MiniLM(BaseEmbedding):
        """Trove's MiniLM embedder behind LlamaIndex's embedding interface."""

        _embedder: Any = PrivateAttr()

        def __init__(self, inner: Any) -> None:
            super().__init__(model_name="all-MiniLM-L6-v2")
            self._embedder = inner

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._embedder.encode_query(query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._embedder.encode_query(text).tolist()

    t0 = time.perf_counter()
    nodes = [
        TextNode(id_=r.chunk_id, text=r.text, embedding=np.asarray(r.vector).tolist())
        for r in records
    ]
    embed_model = MiniLM(embedder)
    vector_index = VectorStoreIndex(nodes, embed_model=embed_model, show_progress=False)
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=50)
    retriever = QueryFusionRetriever(
        [bm25, vector_index.as_retriever(similarity_top_k=50)],
        llm=MockLLM(),
        mode=FUSION_MODES.RECIPROCAL_RANK,
        similarity_top_k=10,
        num_queries=1,
        use_async=False,
    )
    build_s = time.perf_counter() - t0
    retriever.retrieve(queries[0])
    times = timed(retriever.retrieve, queries)
    return {**percentiles(times), "queries": len(queries), "build_s": round(build_s, 1)}
