"""With a principal who may read ~1% of the chunks, top-k equals brute force over readable rows."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from core.acl import Acl, Principal
from retrieval.analysis import analyze
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import Bm25Params, EmbeddedIndex
from tests.retrieval.builders import DIM, assert_same_ranking, random_text, record

N_DOCS = 2500
CHUNKS_PER_DOC = 4  # 10,000 rows
K = 10
READER = Principal.of("reader", ["rare"])


def _acl(rng: np.random.Generator) -> Acl:
    r = rng.random()
    if r < 0.01:
        return Acl(allow_groups=frozenset({"rare"}))  # ~1% readable by READER
    if r < 0.02:  # allowed but denied: must never show
        return Acl(allow_groups=frozenset({"rare"}), deny_users=frozenset({"reader"}))
    if r < 0.5:
        return Acl(public=True, tenant="other")
    return Acl(allow_groups=frozenset({"common"}))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(11)
    records = []
    vectors = rng.normal(size=(N_DOCS * CHUNKS_PER_DOC, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for d in range(N_DOCS):
        acl = _acl(rng)
        for c in range(CHUNKS_PER_DOC):
            records.append(
                record(f"doc{d:05d}", c, random_text(rng), acl, vector=vectors[len(records)])
            )
    path = tmp_path_factory.mktemp("exact") / "ix"
    ix = EmbeddedIndex.open(path, create=True, dimensions=DIM, bm25=Bm25Params.okapi())
    # Three batches, so the search spans segments, with deletes in between.
    third = (N_DOCS // 3) * CHUNKS_PER_DOC  # batch boundaries between documents
    ix.apply(WriteBatch(upserts=records[:third]))
    ix.apply(WriteBatch(upserts=records[third : 2 * third]))
    # Deletes of documents written by earlier batches (a delete in the same batch as an
    # upsert of that document is followed by the upsert, which re-creates it).
    deleted = {records[i].doc_id for i in range(0, 2 * third, 9 * CHUNKS_PER_DOC)}
    ix.apply(WriteBatch(upserts=records[2 * third :], delete_docs=deleted))
    live = [r for r in records if r.doc_id not in deleted]
    yield ix, live
    ix.close()


def test_readable_fraction_is_about_one_percent(corpus):
    _, live = corpus
    readable = sum(r.acl.permits(READER) for r in live)
    assert 0.004 * len(live) < readable < 0.02 * len(live)


def test_dense_top_k_is_exact_under_a_selective_filter(corpus):
    ix, live = corpus
    readable = [r for r in live if r.acl.permits(READER)]
    mat = np.stack([r.vector for r in readable])
    rng = np.random.default_rng(5)
    for _ in range(20):
        q = rng.normal(size=DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        scores = mat @ q
        order = np.argsort(-scores, kind="stable")[:K]
        got = ix.search_dense(q, READER, K)
        assert len(got) == K
        score_of = {r.chunk_id: float(s) for r, s in zip(readable, scores, strict=True)}
        assert_same_ranking(got, [readable[i].chunk_id for i in order], scores[order], score_of)
        assert all(r.acl.permits(READER) for r in ix.get_chunks([h.chunk_id for h in got]))


def test_lexical_top_k_is_exact_under_a_selective_filter(corpus):
    """BM25 statistics come from the whole live corpus; ranking is restricted to readable rows."""
    ix, live = corpus
    oracle = BM25Okapi([analyze(r.text) for r in live])
    readable_ix = np.array([i for i, r in enumerate(live) if r.acl.permits(READER)])
    for query in ["travel hotel", "audit compliance privacy", "printer", "leave policy budget"]:
        scores = oracle.get_scores(analyze(query))[readable_ix]
        positive = scores > 0
        order = np.argsort(-scores, kind="stable")[: min(K, int(positive.sum()))]
        got = ix.search_lexical(query, READER, K)
        assert len(got) == len(order) > 0
        ids = [live[i].chunk_id for i in readable_ix]
        score_of = dict(zip(ids, scores.tolist(), strict=True))
        assert_same_ranking(got, [ids[i] for i in order], scores[order], score_of)
