"""Retrieval quality of lexical, dense and hybrid search under each fusion setting.

The same scoring as `trove eval` (:func:`retrieval.evaluate.evaluate` over a
:class:`retrieval.search.Searcher`, leaks judged from the ACLs stored in the
index), run in one process so every setting sees the same index and the same
query vectors. One row per setting: mode, fusion, rrf_k, dense_weight,
candidates, recall@10, MRR@10, nDCG@10, citation hits and leaks.

Usage (after `trove ingest -c <config>`)::

    python -m trove.bench.fusion -c benchmarks/18f-handbook/trove.yaml \\
        -q benchmarks/18f-handbook/queries.jsonl

Any single row can be reproduced with `trove eval`, setting the fusion through
the environment (``TROVE_RETRIEVAL__FUSION=blend TROVE_RETRIEVAL__DENSE_WEIGHT=0.3``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from retrieval.evaluate import GoldenQuery, SearchFn
    from retrieval.models import Passage
    from retrieval.search import Searcher

RRF_KS = (10, 30, 60)
DENSE_WEIGHTS = (0.3, 0.5, 0.7)
CANDIDATES = (20, 50, 100)


@dataclass(frozen=True)
class Setting:
    mode: str  # lexical, dense or hybrid
    fusion: str = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5
    candidates: int = 50

    def label(self) -> str:
        if self.mode != "hybrid":
            return self.mode
        knob = f"k={self.rrf_k}" if self.fusion == "rrf" else f"w={self.dense_weight}"
        return f"{self.fusion} {knob} c={self.candidates}"


def settings_grid() -> list[Setting]:
    """Both single retrievers, then every RRF and blend setting asked for in issue #3."""
    grid = [Setting("lexical"), Setting("dense")]
    for candidates in CANDIDATES:
        grid += [Setting("hybrid", "rrf", k, 0.5, candidates) for k in RRF_KS]
        grid += [Setting("hybrid", "blend", 60, w, candidates) for w in DENSE_WEIGHTS]
    return grid


class _MemoEncoder:
    """Encodes each query once for all settings (the vectors do not depend on fusion)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self._memo: dict[str, np.ndarray] = {}

    def encode_query(self, text: str) -> np.ndarray:
        if text not in self._memo:
            self._memo[text] = self.embedder.encode_query(text)
        return self._memo[text]


def golden_search(searcher: Searcher, mode: str, k: int) -> SearchFn:
    """The golden-set search function of one searcher and mode (for ``evaluate``)."""

    def search(query: GoldenQuery) -> list[Passage]:
        return searcher.search(query.query, query.principal(), k=k, mode=mode)

    return search


def sweep(
    config: str | Path, queries: str | Path, grid: list[Setting] | None = None, k: int = 10
) -> list[dict[str, Any]]:
    """Evaluate every setting of ``grid`` on an ingested index; one dict per setting."""
    from core.runtime import configure_offline_environment
    from retrieval.evaluate import evaluate, load_queries
    from retrieval.index.factory import open_index
    from retrieval.search import Searcher
    from trove.config import load_settings
    from trove.wiring import build_embedder

    configure_offline_environment()
    settings = load_settings(config)
    golden = load_queries(queries)
    encoder = _MemoEncoder(build_embedder(settings.embedding))
    index = open_index(settings.index)
    rows: list[dict[str, Any]] = []
    try:

        def may_read(q: Any, passage: Any) -> bool:
            records = index.get_chunks([passage.chunk_id])
            return bool(records) and records[0].acl.permits(q.principal())

        for setting in grid or settings_grid():
            searcher = Searcher(
                index,
                encoder,
                fusion=setting.fusion,
                rrf_k=setting.rrf_k,
                dense_weight=setting.dense_weight,
                candidates=setting.candidates,
            )
            report = evaluate(
                golden,
                golden_search(searcher, setting.mode, k),
                k=k,
                may_read=may_read,
            )
            rows.append(
                {
                    "setting": setting.label(),
                    "mode": setting.mode,
                    "fusion": setting.fusion,
                    "rrf_k": setting.rrf_k,
                    "dense_weight": setting.dense_weight,
                    "candidates": setting.candidates,
                    "recall@10": round(report.mean("recall") or 0.0, 4),
                    "mrr@10": round(report.mean("reciprocal_rank") or 0.0, 4),
                    "ndcg@10": round(report.mean("ndcg") or 0.0, 4),
                    "citation_hit_rate": report.citation_hit_rate,
                    "leaks": report.leaks,
                    "backend": settings.embedding.backend,
                }
            )
    finally:
        index.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-q", "--queries", required=True)
    args = parser.parse_args(argv)
    for row in sweep(args.config, args.queries):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
