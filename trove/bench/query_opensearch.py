"""The OpenSearch half of ``trove bench query --backend opensearch``.

The same generated records, queries, principals and query encoder as the
embedded half (trove/bench/query.py), written through Trove's own writer
(``OpenSearchIndex.apply``: bulk, per-item checks, refresh) to a fresh index on
a real node, then timed query by query from this process:

* ``lexical``: ``search_lexical`` (BM25 with the ACL filter), 50 candidates;
* ``dense``: ``search_dense`` (Lucene HNSW, the ACL as the efficient k-NN
  filter), 50 candidates, query vectors computed beforehand;
* ``hybrid``: :class:`~retrieval.search.Searcher` (query embedding included),
  k=10 over 50 candidates: RRF through the server-side ``hybrid`` query and
  search pipeline (one request; 2.19 takes no RRF weights, so dense weight
  0.5), and ``hybrid_zscore``, the configured default fusion, which Trove
  computes from two requests (lexical and k-NN).

Plus bulk-ingest throughput, the index's size on disk (primary store), the
node's JVM heap and resident memory, and the filtered k-NN recall against exact
search (trove/bench/filtered_recall.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from retrieval.index.base import ChunkRecord
from trove.bench import corpus as bench_corpus
from trove.bench.errors import BenchError
from trove.bench.query_serve import percentiles, timed

CANDIDATES = 50
RECALL_QUERIES = 20


def _with_qps(times: list[float]) -> dict[str, float]:
    return {**percentiles(times), "qps": round(len(times) / sum(times), 1)}


def measure(url: str, records: Sequence[ChunkRecord], queries: list[str]) -> dict[str, Any]:
    """Write ``records`` to a new index on the node at ``url``, time the queries, drop it."""
    from opensearchpy import OpenSearch

    from retrieval.embedding.factory import get_embedder
    from retrieval.index.opensearch.index import OpenSearchIndex
    from retrieval.search import Searcher
    from trove.bench import filtered_recall
    from trove.bench.opensearch_node import drop_prefix, index_config, node_memory, node_version

    main, selective = bench_corpus.MAIN_PRINCIPAL, bench_corpus.SELECTIVE_PRINCIPAL
    config = index_config(url, f"trove-bench-{uuid.uuid4().hex[:8]}")
    client = OpenSearch(hosts=[url], timeout=120)
    try:
        memory_before = node_memory(client)
        written = write_records(config, records)
        embedder = get_embedder()
        embedder.warm_up_queries()
        vectors = {q: embedder.encode_query(q) for q in queries}
        with (
            OpenSearchIndex.open(config) as index,
            OpenSearchIndex.open(config.model_copy(update={"hybrid_combination": "rrf"})) as rrf,
        ):
            server_side = Searcher(
                rrf,
                embedder,
                fusion="rrf",
                rrf_k=60,
                dense_weight=0.5,
                candidates=CANDIDATES,
                document_fusion=False,  # the backend's one-request hybrid query
            )
            client_side = Searcher(index, embedder, fusion="zscore", candidates=CANDIDATES)
            t0 = time.perf_counter()
            server_side.search(queries[0], main, k=10)
            first_query_s = time.perf_counter() - t0
            client_side.search(queries[0], main, k=10)
            hybrid = timed(lambda q: server_side.search(q, main, k=10), queries)
            hybrid_zscore = timed(lambda q: client_side.search(q, main, k=10), queries)
            lexical = timed(lambda q: index.search_lexical(q, main, CANDIDATES), queries)
            dense = timed(lambda q: index.search_dense(vectors[q], main, CANDIDATES), queries)
            sel_hybrid = timed(lambda q: server_side.search(q, selective, k=10), queries)
            sel_lexical = timed(lambda q: index.search_lexical(q, selective, CANDIDATES), queries)
            stats = index.stats()
            store = client.indices.stats(index=index.alias, metric="store")
            sample = queries[:RECALL_QUERIES]
            recall = filtered_recall.measure(
                index,
                records,
                [vectors[q] for q in sample],
                {"selective_1pct": selective, "main": main},
            )
        memory_after = node_memory(client)
    finally:
        drop_prefix(client, config.index_prefix)
        client.close()
    return {
        "version": node_version(url),
        "ingest": written,
        "first_query_s": round(first_query_s, 3),
        "hybrid": _with_qps(hybrid),
        "hybrid_zscore": _with_qps(hybrid_zscore),
        "lexical": _with_qps(lexical),
        "dense": _with_qps(dense),
        "selective_1pct": {"hybrid": percentiles(sel_hybrid), "lexical": percentiles(sel_lexical)},
        "index_bytes": store["_all"]["primaries"]["store"]["size_in_bytes"],
        "indexed_chunks": stats.chunks,
        "node_memory_before_ingest": memory_before,
        "node_memory": memory_after,
        "filtered_knn_recall_at_10": recall,
    }


def ratios(embedded: dict[str, Any], opensearch: dict[str, Any]) -> dict[str, float]:
    """How many times slower OpenSearch's p50/p95 are than the embedded index's."""
    pairs = {
        "hybrid": (opensearch["hybrid"], embedded["hybrid"]),
        "hybrid_zscore": (opensearch["hybrid_zscore"], embedded["hybrid"]),
        "lexical": (opensearch["lexical"], embedded["lexical"]),
        "dense": (opensearch["dense"], embedded["dense_index"]),
    }
    out = {}
    for name, (slow, fast) in pairs.items():
        for p in ("p50_ms", "p95_ms"):
            out[f"{name}_{p[:3]}"] = round(slow[p] / fast[p], 1) if fast[p] > 0 else float("inf")
    return out


# Records per bulk request: batches end at a document boundary (upserts replace).
WRITE_BATCH = 2_000


def write_records(config: Any, records: Sequence[ChunkRecord]) -> dict[str, Any]:
    """Bulk-write ``records`` into a new OpenSearch index; chunks, seconds, chunks/s."""
    from retrieval.index.base import WriteBatch
    from retrieval.index.opensearch.index import OpenSearchIndex

    vector = records[0].vector
    if vector is None:
        raise BenchError("the records carry no vectors: embed them before writing")
    dimensions = len(vector)
    t0 = time.perf_counter()
    with OpenSearchIndex.open(config, create=True, dimensions=dimensions) as index:
        for batch in bench_corpus.document_batches(records, WRITE_BATCH):
            index.apply(WriteBatch(upserts=batch))
        indexed = index.stats().chunks
    seconds = time.perf_counter() - t0
    if indexed != len(records):
        raise RuntimeError(f"OpenSearch holds {indexed} chunks, {len(records)} were written")
    return {
        "chunks": indexed,
        "seconds": round(seconds, 2),
        "chunks_per_s": round(indexed / seconds, 1),
    }
