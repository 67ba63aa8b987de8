"""Differential test: the index's okapi BM25 top-10 equals rank-bm25 ``BM25Okapi``'s,
with the same analyzer, on a real corpus and a synthetic one, also after deletes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from core.acl import Acl, Principal
from retrieval.analysis import analyze
from retrieval.index.base import ChunkRecord, WriteBatch
from retrieval.index.embedded import Bm25Params, EmbeddedIndex
from tests.retrieval.builders import DIM, assert_same_ranking, random_text, record

EVERYONE = Acl(public=True)
ANYONE = Principal.of("anyone")
K = 10


def build_index(path: Path, records: list[ChunkRecord], batches: int = 3) -> EmbeddedIndex:
    ix = EmbeddedIndex.open(path, create=True, dimensions=DIM, bm25=Bm25Params.okapi())
    # Split between documents: a document upserted again in a later batch would replace
    # its chunks from the earlier one.
    docs = list(dict.fromkeys(r.doc_id for r in records))
    for part in np.array_split(np.arange(len(docs)), batches):
        wanted = {docs[i] for i in part}
        ix.apply(WriteBatch(upserts=[r for r in records if r.doc_id in wanted]))
    return ix


def check_queries(ix: EmbeddedIndex, live: list[ChunkRecord], queries: list[str]) -> int:
    """Compare top-10 for each query; returns how many queries had a non-trivial ranking."""
    oracle = BM25Okapi([analyze(r.text) for r in live])
    ids = [r.chunk_id for r in live]
    checked = 0
    for query in queries:
        terms = analyze(query)
        if not terms:
            continue
        scores = oracle.get_scores(terms)
        # The index returns only chunks that contain a query term; rank-bm25 scores the
        # rest 0 (or any remaining chunk 0), so compare the positive part.
        n_pos = int((scores > 0).sum())
        order = np.argsort(-scores, kind="stable")[: min(K, n_pos)]
        got = ix.search_lexical(query, ANYONE, K)
        score_of = dict(zip(ids, scores.tolist(), strict=True))
        assert_same_ranking(got, [ids[i] for i in order], scores[order], score_of)
        checked += bool(len(order))
    return checked


def synthetic_records(n_docs: int, seed: int) -> list[ChunkRecord]:
    rng = np.random.default_rng(seed)
    return [
        record(f"s{d:04d}", c, random_text(rng), EVERYONE, rng=rng)
        for d in range(n_docs)
        for c in range(int(rng.integers(1, 4)))
    ]


SYNTHETIC_QUERIES = [
    "travel hotel",
    "per diem receipt",
    "security laptop password",
    "audit audit compliance",  # a repeated term counts twice, as in rank-bm25
    "printer network account access",
    "holiday",
    "interview onboarding benefit payroll",
    "unknownword travel",
]


def test_synthetic_corpus_matches_rank_bm25(tmp_path):
    records = synthetic_records(600, seed=1)
    with build_index(tmp_path / "ix", records) as ix:
        assert check_queries(ix, records, SYNTHETIC_QUERIES) == len(SYNTHETIC_QUERIES)


def test_statistics_are_exact_after_deletes_and_reupserts(tmp_path):
    records = synthetic_records(600, seed=2)
    with build_index(tmp_path / "ix", records) as ix:
        rng = np.random.default_rng(9)
        doc_ids = sorted({r.doc_id for r in records})
        deleted = set(rng.choice(doc_ids, size=150, replace=False).tolist())
        ix.apply(WriteBatch(delete_docs=deleted))
        # Re-upsert some documents with different text: their old lengths and terms go.
        changed = sorted(set(doc_ids) - deleted)[:40]
        new = [record(d, 0, random_text(rng, 60), EVERYONE, rng=rng) for d in changed]
        ix.apply(WriteBatch(upserts=new))
        live = [r for r in records if r.doc_id not in deleted and r.doc_id not in set(changed)]
        live += new
        assert ix.stats().chunks == len(live)
        assert check_queries(ix, live, SYNTHETIC_QUERIES) == len(SYNTHETIC_QUERIES)


def handbook_paragraphs(root: Path, limit: int = 4000) -> list[str]:
    paragraphs = []
    for path in sorted(root.rglob("*.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # YAML front matter
        paragraphs += [p.strip() for p in re.split(r"\n\s*\n", text) if len(analyze(p)) >= 5]
    return paragraphs[:limit]


@pytest.mark.corpus
def test_handbook_paragraphs_match_rank_bm25(tmp_path, shared_corpora):
    paragraphs = handbook_paragraphs(shared_corpora / "18f-handbook")
    assert len(paragraphs) > 1000
    rng = np.random.default_rng(4)
    records = [record(f"p{i:05d}", 0, text, EVERYONE, rng=rng) for i, text in enumerate(paragraphs)]
    # Queries: fixed ones, plus words drawn from random paragraphs.
    queries = ["travel per diem", "security clearance laptop", "parental leave", "code review"]
    for i in rng.choice(len(paragraphs), size=40, replace=False):
        words = re.findall(r"[A-Za-z]{3,}", paragraphs[i])
        queries.append(" ".join(rng.choice(words, size=min(3, len(words)), replace=False)))
    with build_index(tmp_path / "ix", records) as ix:
        assert check_queries(ix, records, queries) >= 40
