"""How exact OpenSearch's filtered k-NN is: top-10 against brute force over the readable chunks.

Lucene's HNSW search with a filter is approximate. For each principal and each
(``k``, ``ef_search``) tried, the top 10 of ``search_dense`` is compared with the
exact cosine top 10 among the chunks that principal may read (numpy over the
same vectors); recall@10 is the mean share of the exact top 10 found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.acl import Principal
from retrieval.index.base import ChunkRecord

TOP = 10
# (k-NN k, ef_search) pairs tried: k 10 is a bare top 10, k 100 what Trove asks
# (retrieval.candidates); ef_search None is the engine's default (k for Lucene).
GRID: tuple[tuple[int, int | None], ...] = ((10, None), (10, 100), (100, None), (100, 200))


def exact_top(
    vectors: np.ndarray, ids: Sequence[str], readable: np.ndarray, query: np.ndarray
) -> list[str]:
    """The exact cosine top :data:`TOP` among ``readable`` rows (vectors unit length)."""
    rows = np.flatnonzero(readable)
    scores = vectors[rows] @ (query / np.linalg.norm(query))
    best = rows[np.argsort(-scores, kind="stable")[:TOP]]
    return [ids[int(r)] for r in best]


def measure(
    index: Any,
    records: Sequence[ChunkRecord],
    query_vectors: Sequence[np.ndarray],
    principals: dict[str, Principal],
    grid: Sequence[tuple[int, int | None]] = GRID,
) -> dict[str, Any]:
    """Recall@10 of ``index.search_dense`` against exact search, per principal and setting.

    ``index`` is an :class:`~retrieval.index.opensearch.index.OpenSearchIndex`
    holding ``records``; its ``knn_ef_search`` is set per setting and restored.
    """
    vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [r.chunk_id for r in records]
    saved = index.knn_ef_search
    out: dict[str, Any] = {}
    try:
        for name, principal in principals.items():
            readable = np.fromiter((r.acl.permits(principal) for r in records), bool, len(records))
            exact = [exact_top(vectors, ids, readable, q) for q in query_vectors]
            rows = []
            for k, ef_search in grid:
                index.knn_ef_search = ef_search
                found = [
                    [h.chunk_id for h in index.search_dense(q, principal, k)[:TOP]]
                    for q in query_vectors
                ]
                pairs = zip(found, exact, strict=True)
                recall = np.mean([len(set(f) & set(e)) / max(len(e), 1) for f, e in pairs])
                rows.append(
                    {"k": k, "ef_search": ef_search, "recall_at_10": round(float(recall), 4)}
                )
            out[name] = {
                "readable_chunks": int(readable.sum()),
                "readable_share": round(float(readable.mean()), 4),
                "queries": len(query_vectors),
                "settings": rows,
            }
    finally:
        index.knn_ef_search = saved
    return out
