"""``trove bench quality``: retrieval quality per golden set and ranking stage, beside LlamaIndex.

For every golden set whose index exists (run ``trove ingest -c <set>/trove.yaml``
first; a set without an index is listed under ``skipped`` with the command):

* **Trove**, through :class:`retrieval.search.Searcher` (the code ``trove eval``
  runs): lexical only, dense only, then each fusion setting of
  :data:`TROVE_STAGES`, with and without the per-document cap.
* **LlamaIndex** ``QueryFusionRetriever`` (the peer) over the *same chunks* (read
  back from the staging store) and the *same vectors* (from the embedding
  cache), with the *same query embeddings* (one MiniLM pass per query, shared by
  all rows): ``BM25Retriever`` (llama-index-retrievers-bm25, its own tokenizer
  and stemmer) and a ``VectorStoreIndex``, each contributing as many candidates
  as Trove's retrievers, ``num_queries=1`` and a ``MockLLM`` (no query rewriting).
  Modes: ``reciprocal_rerank`` (RRF, the default peer), ``relative_score`` and
  ``dist_based_score``. The peer has no permission filter, so its results are
  filtered by each chunk's ACL before the top k (it is never penalised for a leak).

Every row is scored by :func:`retrieval.evaluate.evaluate` over distinct
documents (recall@k, MRR@10, nDCG@10) plus the mean number of distinct
documents in the k passages. ``summary`` gives each row's worst and mean
nDCG@10 and recall@k over the sets, which is how the default was chosen
(docs/benchmarks.md#retrieval-quality).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trove.bench.fusion import _MemoEncoder, golden_search

PROJECT = Path(__file__).resolve().parents[2]
GOLDEN_SETS = ("18f-handbook", "python-library", "postgresql-manual")
PEER_MODES = ("reciprocal_rerank", "relative_score", "dist_based_score")


@dataclass(frozen=True)
class Stage:
    """One Trove ranking configuration (a row of the table)."""

    label: str
    mode: str = "hybrid"
    fusion: str = "blend"
    dense_weight: float = 0.7
    rrf_k: int = 60
    max_per_document: int | None = None
    document_fusion: bool = False


TROVE_STAGES: tuple[Stage, ...] = (
    Stage("lexical", mode="lexical"),
    Stage("dense", mode="dense"),
    Stage("blend w=0.7 (old default)", fusion="blend", dense_weight=0.7),
    Stage("blend w=0.5", fusion="blend", dense_weight=0.5),
    Stage("rrf k=60 w=0.5", fusion="rrf", dense_weight=0.5),
    Stage("zscore w=0.5", fusion="zscore", dense_weight=0.5),
    Stage("zscore w=0.6", fusion="zscore", dense_weight=0.6),
    Stage("zscore w=0.7", fusion="zscore", dense_weight=0.7),
    Stage("blend w=0.7, 1/doc", fusion="blend", dense_weight=0.7, max_per_document=1),
    Stage("blend w=0.5, 1/doc", fusion="blend", dense_weight=0.5, max_per_document=1),
    Stage("rrf k=60 w=0.5, 1/doc", fusion="rrf", dense_weight=0.5, max_per_document=1),
    Stage("zscore w=0.5, 1/doc", fusion="zscore", dense_weight=0.5, max_per_document=1),
    Stage("zscore w=0.6, 1/doc", fusion="zscore", dense_weight=0.6, max_per_document=1),
    Stage("zscore w=0.6, 2/doc", fusion="zscore", dense_weight=0.6, max_per_document=2),
    Stage("zscore w=0.65, 1/doc", fusion="zscore", dense_weight=0.65, max_per_document=1),
    Stage("zscore w=0.7, 1/doc", fusion="zscore", dense_weight=0.7, max_per_document=1),
    Stage("rrf k=60 w=0.6, 1/doc", fusion="rrf", dense_weight=0.6, max_per_document=1),
    Stage("rrf k=30 w=0.6, 1/doc", fusion="rrf", rrf_k=30, dense_weight=0.6, max_per_document=1),
    # Document-level fusion (retrieval.fusion.fuse_by_document), with the cap.
    *(
        Stage(
            f"document zscore w={w}, 1/doc",
            fusion="zscore",
            dense_weight=w,
            max_per_document=1,
            document_fusion=True,
        )
        for w in (0.5, 0.55, 0.6, 0.65, 0.7)
    ),
    Stage(
        "document blend w=0.6, 1/doc",
        fusion="blend",
        dense_weight=0.6,
        max_per_document=1,
        document_fusion=True,
    ),
    Stage(
        "document rrf k=60 w=0.5, 1/doc",
        fusion="rrf",
        dense_weight=0.5,
        max_per_document=1,
        document_fusion=True,
    ),
)


def golden_set_paths(name: str) -> tuple[Path, Path]:
    folder = PROJECT / "benchmarks" / name
    return folder / "trove.yaml", folder / "queries.jsonl"


def _row(system: str, label: str, report: Any, k: int, started: float) -> dict[str, Any]:
    answered = [r for r in report.results if not r.negative]
    distinct = [len(r.returned) for r in answered]
    return {
        "system": system,
        "setting": label,
        f"recall@{k}": round(report.mean("recall") or 0.0, 4),
        "mrr@10": round(report.mean("reciprocal_rank") or 0.0, 4),
        "ndcg@10": round(report.mean("ndcg") or 0.0, 4),
        "distinct_documents": round(sum(distinct) / len(distinct), 2) if distinct else None,
        "leaks": report.leaks,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _chunks_and_vectors(settings: Any, index: Any, model_id: str) -> tuple[list, np.ndarray]:
    """Every indexed chunk (from the staging stores) and its vector (from the embedding cache)."""
    from pipelines.stages import embedding_text
    from pipelines.store import EmbeddingCache, StagingStore, text_hash

    records, keys = [], []
    live = index.doc_ids()
    for source in settings.sources:
        store = StagingStore.for_source(settings.state.path, source.name)
        try:
            for doc_id in sorted(store.indexed_chunk_ids()):
                if doc_id not in live:
                    continue
                for record, context in store.indexed_chunks(doc_id):
                    records.append(record)
                    keys.append(text_hash(model_id, embedding_text(record, context)))
        finally:
            store.close()
    cache = EmbeddingCache.in_state_dir(settings.state.path)
    try:
        found = cache.get_many(keys)
    finally:
        cache.close()
    missing = sum(key not in found for key in keys)
    if missing:
        raise RuntimeError(f"{missing} chunk vectors are not in the embedding cache")
    return records, np.stack([found[key] for key in keys])


def llamaindex_retrievers(
    records: Sequence[Any], vectors: np.ndarray, encoder: Any, candidates: int, top: int
) -> dict[str, Callable[[str], list[str]]]:
    """One ``query -> chunk ids`` function per fusion mode of ``QueryFusionRetriever``."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever
    from pydantic import PrivateAttr

    class SameQueryVectors(BaseEmbedding):
        """The query embeddings Trove uses (one MiniLM pass per query, memoised)."""

        _encoder: Any = PrivateAttr()

        def __init__(self, inner: Any) -> None:
            super().__init__(model_name="all-MiniLM-L6-v2")
            self._encoder = inner

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._encoder.encode_query(query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            raise AssertionError("document vectors come from the embedding cache")

    nodes = [
        TextNode(id_=r.chunk_id, text=r.text, embedding=v.tolist())
        for r, v in zip(records, vectors, strict=True)
    ]
    vector_index = VectorStoreIndex(
        nodes, embed_model=SameQueryVectors(encoder), show_progress=False
    )
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=candidates)
    dense = vector_index.as_retriever(similarity_top_k=candidates)
    out: dict[str, Callable[[str], list[str]]] = {}
    for mode in PEER_MODES:
        retriever = QueryFusionRetriever(
            [bm25, dense],
            llm=MockLLM(),
            mode=FUSION_MODES(mode),
            similarity_top_k=top,
            num_queries=1,
            use_async=False,
        )
        out[mode] = _node_ids(retriever)
    return out


def _node_ids(retriever: Any) -> Callable[[str], list[str]]:
    """``query -> chunk ids`` of one LlamaIndex retriever."""

    def retrieve(query: str) -> list[str]:
        return [n.node.node_id for n in retriever.retrieve(query)]

    return retrieve


def run_set(name: str, k: int = 10, peers: bool = True) -> dict[str, Any]:
    """Every Trove stage and peer row on one golden set (its index must exist)."""
    from retrieval.evaluate import evaluate, load_queries
    from retrieval.index.base import IndexNotFoundError
    from retrieval.index.factory import open_index
    from retrieval.models import Passage
    from retrieval.search import Searcher, passage_from_record
    from trove.config import load_settings
    from trove.wiring import build_embedder

    config, queries = golden_set_paths(name)
    settings = load_settings(config)
    golden = load_queries(queries)
    try:
        index = open_index(settings.index)
    except IndexNotFoundError as exc:
        return {"skipped": f"{exc}: run `trove ingest -c {config.relative_to(PROJECT)}`"}
    embedder = build_embedder(settings.embedding)
    encoder = _MemoEncoder(embedder)
    candidates = settings.retrieval.candidates
    rows: list[dict[str, Any]] = []
    try:
        stats = index.stats()

        def may_read(q: Any, passage: Passage) -> bool:
            found = index.get_chunks([passage.chunk_id])
            return bool(found) and found[0].acl.permits(q.principal())

        for stage in TROVE_STAGES:
            searcher = Searcher(
                index,
                encoder,
                fusion=stage.fusion,
                rrf_k=stage.rrf_k,
                dense_weight=stage.dense_weight,
                candidates=candidates,
                max_per_document=stage.max_per_document,
                document_fusion=stage.document_fusion,
            )
            started = time.perf_counter()
            report = evaluate(
                golden,
                golden_search(searcher, stage.mode, k),
                k=k,
                may_read=may_read,
            )
            rows.append(_row("trove", stage.label, report, k, started))
        if peers:
            records, vectors = _chunks_and_vectors(settings, index, embedder.model_id)
            # The ACLs the index enforces (the staging copy keeps text, not permissions).
            by_id = {r.chunk_id: r for r in index.get_chunks([r.chunk_id for r in records])}
            # Room for the ACL filter: the peer ranks more than k, the readable top k count.
            retrievers = llamaindex_retrievers(records, vectors, encoder, candidates, top=3 * k)
            for mode, retrieve in retrievers.items():

                def search(q: Any, retrieve: Callable[[str], list[str]] = retrieve) -> list:
                    principal = q.principal()
                    readable = [
                        by_id[cid] for cid in retrieve(q.query) if by_id[cid].acl.permits(principal)
                    ]
                    return [passage_from_record(r, 0.0) for r in readable[:k]]

                started = time.perf_counter()
                report = evaluate(golden, search, k=k, may_read=may_read)
                rows.append(_row("llamaindex", f"QueryFusionRetriever {mode}", report, k, started))
    finally:
        index.close()
    return {
        "queries": len(golden),
        "answerable": sum(not q.negative for q in golden),
        "chunks": stats.chunks,
        "documents": stats.documents,
        "rows": rows,
    }


def summarise(sets: dict[str, dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Per row: worst and mean nDCG@10 and recall@k over the measured sets, best worst first."""
    measured = [s for s in sets.values() if "rows" in s]
    if not measured:
        return []
    labels = [(r["system"], r["setting"]) for r in measured[0]["rows"]]
    out = []
    for system, setting in labels:
        picked = [
            next(r for r in s["rows"] if (r["system"], r["setting"]) == (system, setting))
            for s in measured
        ]
        ndcg = [r["ndcg@10"] for r in picked]
        recall = [r[f"recall@{k}"] for r in picked]
        out.append(
            {
                "system": system,
                "setting": setting,
                "worst_ndcg@10": min(ndcg),
                "mean_ndcg@10": round(sum(ndcg) / len(ndcg), 4),
                f"worst_recall@{k}": min(recall),
                f"mean_recall@{k}": round(sum(recall) / len(recall), 4),
            }
        )
    return sorted(out, key=lambda r: (-r["worst_ndcg@10"], -r["mean_ndcg@10"]))


def run(sets: Sequence[str] = GOLDEN_SETS, k: int = 10, peers: bool = True) -> dict[str, Any]:
    from core.runtime import configure_offline_environment

    configure_offline_environment()
    unknown = sorted(set(sets) - set(GOLDEN_SETS))
    if unknown:
        raise ValueError(f"unknown golden sets {unknown} (valid: {list(GOLDEN_SETS)})")
    results = {name: run_set(name, k=k, peers=peers) for name in sets}
    return {
        "k": k,
        "note": "quality only; the seconds are wall time on a shared, noisy machine",
        "sets": results,
        "summary": summarise(results, k),
    }
