"""``trove bench query``: hybrid and lexical latency, memory and open time, beside peers.

Steps (see docs/benchmarks.md#query-speed):

1. The 18F replication corpus of ``chunks`` rows (trove/bench/corpus.py): base
   chunks embedded once with the real model and cached, replicas perturbed.
2. An embedded index built from it in batches (kept in ``workdir`` and reused
   by later runs of the same size).
3. Serving numbers measured in a fresh process (trove/bench/query_serve.py):
   open + first query, hybrid (query embedding, lexical, dense, fusion,
   passages), lexical alone, resident memory, dense recall against float32.
4. Peers on the same records and queries (trove/bench/query_peers.py), up to
   :data:`PEER_MAX_CHUNKS` chunks; above that they are skipped with a note.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.acl import Principal
from trove.bench import corpus as bench_corpus
from trove.bench.errors import BenchError

BUILD_BATCH = 100_000
PEER_MAX_CHUNKS = 100_000
# Peers are far slower per query (docs/benchmarks.md#query-speed-latest): a fixed
# subset keeps a run in minutes.
PEER_QUERIES = 30
DEFAULT_CACHE = Path.home() / ".cache" / "trove" / "bench"
SERVE_TIMEOUT_S = 3600


def _principal_json(p: Principal) -> dict[str, Any]:
    return {"user": p.user, "groups": sorted(p.groups), "tenant": p.tenant}


def build_index(base: bench_corpus.BaseCorpus, chunks: int, path: Path) -> dict[str, Any]:
    """Write the replicated corpus to a new index at ``path``, in batches; returns its facts."""
    from retrieval.index.base import WriteBatch
    from retrieval.index.embedded import EmbeddedIndex

    marker = path / "bench.json"
    if marker.exists():
        return json.loads(marker.read_text())
    if path.exists():
        shutil.rmtree(path)  # an unfinished build of an earlier run
    t0 = time.perf_counter()
    readable = {"main": 0, "selective": 0}
    records = bench_corpus.replicate(base.chunks, base.vectors, chunks)
    with EmbeddedIndex.open(path, create=True, dimensions=base.vectors.shape[1]) as index:
        # Batches end at a document boundary: an upsert replaces every chunk of its document.
        for batch in bench_corpus.document_batches(records, BUILD_BATCH):
            for r in batch:
                readable["main"] += r.acl.permits(bench_corpus.MAIN_PRINCIPAL)
                readable["selective"] += r.acl.permits(bench_corpus.SELECTIVE_PRINCIPAL)
            index.apply(WriteBatch(upserts=batch))
        indexed = index.stats().chunks
    if indexed != chunks:
        raise BenchError(f"the generated index holds {indexed} chunks, expected {chunks}")
    facts = {
        "build_s": round(time.perf_counter() - t0, 1),
        "readable_share": round(readable["main"] / chunks, 4),
        "selective_share": round(readable["selective"] / chunks, 4),
    }
    marker.write_text(json.dumps(facts))
    return facts


def _serve(index_path: Path, queries: list[str]) -> dict[str, Any]:
    args = {
        "index": str(index_path),
        "queries": queries,
        "main": _principal_json(bench_corpus.MAIN_PRINCIPAL),
        "selective": _principal_json(bench_corpus.SELECTIVE_PRINCIPAL),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "trove.bench.query_serve", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"the serving process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(slow: float, fast: float) -> float:
    return round(slow / fast, 1) if fast > 0 else float("inf")


def run(
    chunks: int,
    *,
    queries: int = 200,
    peers: bool = True,
    workdir: Path | None = None,
    backend: str = "embedded",
    opensearch_url: str | None = None,
) -> dict[str, Any]:
    """Run the query benchmark on ``chunks`` generated chunks and return the JSON contract.

    :param queries: timed queries per measurement (peers use at most :data:`PEER_QUERIES`).
    :param peers: also time rank-bm25 and LlamaIndex fusion (up to :data:`PEER_MAX_CHUNKS`).
    :param workdir: keep the base embeddings and generated indexes here and reuse them;
        by default a temporary directory (base embeddings cached in ~/.cache/trove/bench).
    :param backend: ``"opensearch"`` also writes the same records to a real OpenSearch node
        (``opensearch_url``, ``OPENSEARCH_URL`` or one started for the run) and times it
        with the same queries and encoder (trove/bench/query_opensearch.py), in ``opensearch``.
    :returns: ``chunks``, ``p50_ms``, ``p95_ms``, ``qps``, ``rss_mb``, ``open_first_query_s``,
        ``lexical``, ``peers`` and details; ``{"chunks", "skipped"}`` when the corpus is absent.
    """
    from retrieval.embedding.config import EmbeddingConfig

    if backend not in ("embedded", "opensearch"):
        raise BenchError(f"unknown backend {backend!r} (valid: embedded, opensearch)")
    if chunks < 1 or queries < 1:
        raise BenchError(f"chunks and queries must be >= 1, got {chunks} and {queries}")
    try:
        bench_corpus.handbook_dir()
    except bench_corpus.CorpusUnavailableError as exc:
        return {"chunks": chunks, "skipped": str(exc)}
    temp = None if workdir is not None else Path(tempfile.mkdtemp(prefix="trove-bench-"))
    root = Path(workdir) if workdir is not None else temp
    assert root is not None
    try:
        cache = root / "base" if workdir is not None else DEFAULT_CACHE
        base = bench_corpus.base_corpus(cache, max_chunks=chunks)
        index_path = root / f"index-{chunks}-g{bench_corpus.GENERATOR_VERSION}"
        facts = build_index(base, chunks, index_path)
        texts = bench_corpus.bench_queries(base.chunks, queries)
        served = _serve(index_path, texts)
        result: dict[str, Any] = {
            "chunks": chunks,
            "p50_ms": served["hybrid"]["p50_ms"],
            "p95_ms": served["hybrid"]["p95_ms"],
            "qps": served["hybrid"]["qps"],
            "rss_mb": served["rss_mb"],
            "open_first_query_s": served["open_first_query_s"],
            "lexical": served["lexical"],
            "peers": {},
            "queries": queries,
            "base_chunks": len(base.chunks),
            "base_pages_skipped": len(base.skipped),
            **facts,
            "details": served,
            "notes": [
                "hybrid = query embedding (MiniLM, embedding.backend's default "
                f"{EmbeddingConfig().backend}, 1 thread) + lexical + dense + RRF fusion + "
                "passages, k=10, 50 candidates per retriever, permission filter on; "
                "details.hybrid_torch_encoder: the same with the torch query encoder",
                "open_first_query_s excludes loading the embedding model (model_load_s)",
            ],
        }
        if backend == "opensearch":
            result["opensearch"], result["opensearch_slower_by"] = _opensearch(
                base, chunks, texts, served, opensearch_url
            )
        if peers:
            result["peers"], result["ratios"] = _peers(base, chunks, texts, served)
            if chunks > PEER_MAX_CHUNKS:
                result["notes"].append(
                    f"peers skipped above {PEER_MAX_CHUNKS} chunks (build and query too slow)"
                )
            result["notes"].append(
                "LlamaIndex fusion has no permission filter; rank-bm25 is timed for "
                "get_scores only (no top-k, no filter)"
            )
        return result
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _peers(
    base: bench_corpus.BaseCorpus, chunks: int, queries: list[str], served: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    if chunks > PEER_MAX_CHUNKS:
        return {}, {}
    from retrieval.embedding.factory import get_embedder
    from trove.bench.query_peers import llamaindex_peer, rank_bm25_peer

    records = list(bench_corpus.replicate(base.chunks, base.vectors, chunks))
    subset = queries[:PEER_QUERIES]
    bm25 = rank_bm25_peer(records, subset)
    fusion = llamaindex_peer(records, subset, get_embedder())
    ratios = {
        "hybrid_vs_llamaindex_fusion_p50": _ratio(fusion["p50_ms"], served["hybrid"]["p50_ms"]),
        "hybrid_vs_llamaindex_fusion_p95": _ratio(fusion["p95_ms"], served["hybrid"]["p95_ms"]),
        "lexical_vs_rank_bm25_p50": _ratio(bm25["p50_ms"], served["lexical"]["p50_ms"]),
        "lexical_vs_rank_bm25_p95": _ratio(bm25["p95_ms"], served["lexical"]["p95_ms"]),
    }
    return {"llamaindex_fusion": fusion, "rank_bm25_lexical": bm25}, ratios


def _opensearch(
    base: bench_corpus.BaseCorpus,
    chunks: int,
    queries: list[str],
    served: dict[str, Any],
    url: str | None,
) -> tuple[dict[str, Any], dict[str, float]]:
    from trove.bench import query_opensearch
    from trove.bench.opensearch_node import opensearch_node

    records = list(bench_corpus.replicate(base.chunks, base.vectors, chunks))
    with opensearch_node(url) as node:
        measured = query_opensearch.measure(node, records, queries)
    return measured, query_opensearch.ratios(served, measured)
