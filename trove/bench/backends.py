"""``trove bench backends``: the same golden sets on the embedded index and on OpenSearch.

Quality parity (issue 17): for each golden set the embedded index is the
reference. Its chunks, ACLs and vectors (the vectors from the embedding cache,
as ``trove bench quality`` reads them) are written unchanged to a fresh index on
a real OpenSearch node, and the same :class:`retrieval.search.Searcher` settings
run the golden queries on both, with the same query vectors:

* the configured default (z-score fusion, which Trove computes client-side from
  OpenSearch's lexical and k-NN lists: two requests);
* RRF, which on OpenSearch is the server-side ``hybrid`` query and search
  pipeline (``hybrid_combination: rrf``; 2.19 takes no RRF weights, so 0.5);
* lexical and dense alone.

Every row is scored by :func:`retrieval.evaluate.evaluate`; leaks are judged
from the embedded index's ACLs, independently of the backend under test. A
setting has parity when nDCG@10 and MRR@10 are within :data:`TOLERANCE` of the
embedded backend, recall@k is not lower and neither leaks.

Then the filtered k-NN exactness (trove/bench/filtered_recall.py) on a corpus
generated as for ``trove bench query`` with a principal who may read ~1%.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.index.base import ChunkRecord
from trove.bench.fusion import _MemoEncoder
from trove.bench.query_opensearch import write_records

PROJECT = Path(__file__).resolve().parents[2]
GOLDEN_SETS = ("18f-handbook", "demo")
TOLERANCE = 0.01


@dataclass(frozen=True)
class Setting:
    """One ranking configuration run on both backends."""

    label: str
    mode: str = "hybrid"
    fusion: str = "zscore"
    dense_weight: float = 0.65
    rrf_k: int = 60
    max_per_document: int | None = 1
    document_fusion: bool = True
    # Parity is required of the fusion settings; the single retrievers are diagnostics
    # (the two BM25 implementations tokenise differently, see docs/opensearch.md).
    target: bool = True


def _shipped() -> Setting:
    """The shipped ranking (``RetrievalConfig()`` defaults), whatever they are today."""
    from retrieval.config import RetrievalConfig

    c = RetrievalConfig()
    doc = "document " if c.document_fusion else ""
    per_doc = f", {c.search_max_per_document}/doc" if c.search_max_per_document else ""
    return Setting(
        f"default: {doc}{c.fusion} w={c.dense_weight}{per_doc} (client-side fusion)",
        fusion=c.fusion,
        dense_weight=c.dense_weight,
        rrf_k=c.rrf_k,
        max_per_document=c.search_max_per_document,
        document_fusion=c.document_fusion,
    )


SETTINGS: tuple[Setting, ...] = (
    _shipped(),
    # Passage-level RRF is the one combination OpenSearch runs in one request.
    Setting(
        "rrf k=60 w=0.5, 1/doc (server-side pipeline)",
        fusion="rrf",
        dense_weight=0.5,
        document_fusion=False,
    ),
    Setting("lexical, 1/doc", mode="lexical", target=False),
    Setting("dense, 1/doc", mode="dense", target=False),
)


def golden_set(name: str, workdir: Path) -> tuple[Path, Path]:
    """``(config, queries)`` of a golden set; the demo is ingested into ``workdir`` first."""
    if name == "demo":
        from trove import demo
        from trove.ingest import run_ingest

        config = workdir / "demo" / "trove.yaml"
        if not config.exists():
            config = demo.prepare(workdir / "demo")
            run_ingest(config)
        return config, demo.QUERIES_FILE
    if name in GOLDEN_SETS:
        folder = PROJECT / "benchmarks" / name
        return folder / "trove.yaml", folder / "queries.jsonl"
    raise ValueError(f"unknown golden set {name!r} (valid: {list(GOLDEN_SETS)})")


def records_with_vectors(settings: Any, index: Any, model_id: str) -> list[ChunkRecord]:
    """Every chunk of the embedded index as stored (ACL included) with its cached vector."""
    from trove.bench.quality import _chunks_and_vectors

    staged, vectors = _chunks_and_vectors(settings, index, model_id)
    stored = {r.chunk_id: r for r in index.get_chunks([r.chunk_id for r in staged])}
    return [
        dataclasses.replace(stored[r.chunk_id], vector=v)
        for r, v in zip(staged, vectors, strict=True)
    ]


def _metrics(report: Any, k: int) -> dict[str, Any]:
    return {
        f"recall@{k}": round(report.mean("recall") or 0.0, 4),
        "mrr@10": round(report.mean("reciprocal_rank") or 0.0, 4),
        "ndcg@10": round(report.mean("ndcg") or 0.0, 4),
        "leaks": report.leaks,
    }


def verdict(embedded: dict[str, Any], opensearch: dict[str, Any], k: int) -> dict[str, Any]:
    """Deltas (OpenSearch minus embedded) and whether they meet the parity rule."""
    deltas = {
        name: round(opensearch[name] - embedded[name], 4)
        for name in ("ndcg@10", "mrr@10", f"recall@{k}")
    }
    parity = (
        abs(deltas["ndcg@10"]) <= TOLERANCE
        and abs(deltas["mrr@10"]) <= TOLERANCE
        and deltas[f"recall@{k}"] >= 0
        and embedded["leaks"] == 0
        and opensearch["leaks"] == 0
    )
    return {"delta": deltas, "parity": parity}


def compare_set(
    config_path: Path,
    queries_path: Path,
    url: str,
    *,
    k: int = 10,
    settings_grid: Sequence[Setting] = SETTINGS,
) -> dict[str, Any]:
    """Every setting on the embedded index of ``config_path`` and on its OpenSearch copy."""
    from retrieval.evaluate import evaluate, load_queries
    from retrieval.index.factory import open_index
    from retrieval.index.opensearch.index import OpenSearchIndex
    from retrieval.search import Searcher
    from trove.bench.opensearch_node import drop_prefix, index_config
    from trove.config import load_settings
    from trove.wiring import build_embedder

    settings = load_settings(config_path)
    golden = load_queries(queries_path)
    embedder = build_embedder(settings.embedding)
    encoder = _MemoEncoder(embedder)  # one query vector per query, shared by both backends
    embedded = open_index(settings.index)
    prefix = f"trove-bench-{uuid.uuid4().hex[:8]}"
    normalization = index_config(url, prefix)
    opened: list[Any] = []
    try:
        records = records_with_vectors(settings, embedded, embedder.model_id)
        written = write_records(normalization, records)
        remote = {
            "normalization": OpenSearchIndex.open(normalization),
            "rrf": OpenSearchIndex.open(
                normalization.model_copy(update={"hybrid_combination": "rrf"})
            ),
        }
        opened.extend(remote.values())

        def may_read(q: Any, passage: Any) -> bool:
            found = embedded.get_chunks([passage.chunk_id])
            return bool(found) and found[0].acl.permits(q.principal())

        rows = []
        for setting in settings_grid:
            backends = {
                "embedded": embedded,
                "opensearch": remote["rrf" if setting.fusion == "rrf" else "normalization"],
            }
            row: dict[str, Any] = {"setting": setting.label, "target": setting.target}
            top: dict[str, list[list[str]]] = {}
            for name, index in backends.items():
                searcher = Searcher(
                    index,
                    encoder,
                    fusion=setting.fusion,
                    rrf_k=setting.rrf_k,
                    dense_weight=setting.dense_weight,
                    candidates=settings.retrieval.candidates,
                    max_per_document=setting.max_per_document,
                    document_fusion=setting.document_fusion,
                )
                lists: list[list[str]] = []

                def search(
                    q: Any, s: Searcher = searcher, out: list = lists, mode: str = setting.mode
                ) -> list[Any]:
                    passages = s.search(q.query, q.principal(), k, mode=mode)
                    out.append([p.chunk_id for p in passages])
                    return passages

                started = time.perf_counter()
                report = evaluate(golden, search, k=k, may_read=may_read)
                seconds = round(time.perf_counter() - started, 2)
                row[name] = {**_metrics(report, k), "seconds": seconds}
                top[name] = lists
            row.update(verdict(row["embedded"], row["opensearch"], k))
            row["same_top_k_share"] = _overlap(top["embedded"], top["opensearch"])
            rows.append(row)
        return {
            "queries": len(golden),
            "chunks": len(records),
            "documents": len({r.doc_id for r in records}),
            "opensearch_write": written,
            "rows": rows,
        }
    finally:
        for index in opened:
            index.close()
        embedded.close()
        from opensearchpy import OpenSearch

        client = OpenSearch(hosts=[url], timeout=60)
        drop_prefix(client, prefix)
        client.close()


def _overlap(a: list[list[str]], b: list[list[str]]) -> float:
    """Mean share of one backend's returned chunks the other returned too (per query)."""
    pairs = [(set(x), set(y)) for x, y in zip(a, b, strict=True) if x or y]
    shares = [len(x & y) / max(len(x), len(y)) for x, y in pairs]
    return round(sum(shares) / len(shares), 4) if shares else 1.0


def filtered_recall(url: str, chunks: int, queries: int = 50) -> dict[str, Any]:
    """Filtered k-NN exactness on ``chunks`` generated chunks (trove/bench/corpus.py)."""
    from retrieval.embedding.factory import get_embedder
    from retrieval.index.opensearch.index import OpenSearchIndex
    from trove.bench import corpus as bench_corpus
    from trove.bench import filtered_recall as fr
    from trove.bench.opensearch_node import drop_prefix, index_config
    from trove.bench.query import DEFAULT_CACHE

    try:
        bench_corpus.handbook_dir()
    except bench_corpus.CorpusUnavailableError as exc:
        return {"skipped": str(exc)}
    base = bench_corpus.base_corpus(DEFAULT_CACHE, max_chunks=chunks)
    records = list(bench_corpus.replicate(base.chunks, base.vectors, chunks))
    embedder = get_embedder()
    vectors = [embedder.encode_query(q) for q in bench_corpus.bench_queries(base.chunks, queries)]
    config = index_config(url, f"trove-bench-{uuid.uuid4().hex[:8]}")
    try:
        written = write_records(config, records)
        with OpenSearchIndex.open(config) as index:
            measured = fr.measure(
                index,
                records,
                vectors,
                {
                    "selective_1pct": bench_corpus.SELECTIVE_PRINCIPAL,
                    "main": bench_corpus.MAIN_PRINCIPAL,
                },
            )
        return {"chunks": chunks, "opensearch_write": written, "recall_at_10": measured}
    finally:
        from opensearchpy import OpenSearch

        client = OpenSearch(hosts=[url], timeout=60)
        drop_prefix(client, config.index_prefix)
        client.close()


def run(
    sets: Sequence[str] = GOLDEN_SETS,
    *,
    url: str | None = None,
    k: int = 10,
    recall_chunks: int = 20_000,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Parity per golden set and setting, and the filtered k-NN recall (0 chunks: skipped)."""
    from core.runtime import configure_offline_environment
    from trove.bench.opensearch_node import opensearch_node

    configure_offline_environment()
    unknown = sorted(set(sets) - set(GOLDEN_SETS))
    if unknown:
        raise ValueError(f"unknown golden sets {unknown} (valid: {list(GOLDEN_SETS)})")
    temp = None if workdir else Path(tempfile.mkdtemp(prefix="trove-bench-backends-"))
    root = Path(workdir) if workdir else temp
    assert root is not None
    results: dict[str, Any] = {}
    try:
        with opensearch_node(url) as node:
            version, recall = _measure(node, sets, root, k, recall_chunks, results)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    rows = [row for s in results.values() if "rows" in s for row in s["rows"]]
    parity = bool(rows) and all(row["parity"] for row in rows if row["target"])
    return {
        "k": k,
        "opensearch_version": version,
        "tolerance": TOLERANCE,
        "parity": parity,
        "sets": results,
        "filtered_knn": recall,
        "note": "quality only; seconds are wall time on a shared, noisy machine",
    }


def _measure(
    node: str, sets: Sequence[str], root: Path, k: int, recall_chunks: int, results: dict
) -> tuple[str, dict[str, Any]]:
    from retrieval.index.base import IndexNotFoundError
    from trove.bench.opensearch_node import node_version

    version = node_version(node)
    for name in sets:
        config, queries = golden_set(name, root)
        try:
            results[name] = compare_set(config, queries, node, k=k)
        except IndexNotFoundError as exc:
            results[name] = {
                "skipped": f"{exc}: run `trove ingest -c {config.relative_to(PROJECT)}`"
            }
    recall = filtered_recall(node, recall_chunks) if recall_chunks else {"skipped": "0 chunks"}
    return version, recall
