"""MaxScore pruning of common query terms (``ranking._maxscore``) never changes an answer:
the top-k equals full BM25 scoring, under a permission filter, across segments."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from core.acl import Acl, Principal
from retrieval.analysis import analyze
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import Bm25Params, EmbeddedIndex, ranking
from tests.retrieval.builders import WORDS, assert_same_ranking, random_text, record

READER = Principal.of("reader", ["staff"])
RARE = ["zebra", "quokka", "narwhal"]  # each in ~2% of the chunks; every other word is common
QUERIES = [
    "travel zebra",  # the most common word with a rare one
    "travel leave policy quokka",
    "travel leave hotel per diem narwhal zebra",
    "policy compliance quokka quokka",
    "zebra leave leave account",
    "travel",  # common only: no pruning possible
    "zebra narwhal",  # rare only
]


def _index(tmp_path, bm25: Bm25Params):
    rng = np.random.default_rng(21)
    records = []
    for d in range(1200):
        acl = Acl(allow_groups=frozenset({"staff" if rng.random() < 0.5 else "other"}))
        for c in range(3):
            text = random_text(rng)
            if rng.random() < 0.06:
                text += " " + str(rng.choice(RARE))
            records.append(record(f"d{d:05d}", c, text, acl, rng=rng))
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=16, bm25=bm25)
    ix.apply(WriteBatch(upserts=records[:1800]))
    ix.apply(WriteBatch(upserts=records[1800:], delete_docs={"d00001", "d00100"}))
    return ix, [r for r in records if r.doc_id not in {"d00001", "d00100"}]


def _pruned_since(before: int) -> int:
    return ranking.lexical_pruned_segments - before


@pytest.mark.parametrize("bm25", [Bm25Params(), Bm25Params.okapi()], ids=["lucene", "okapi"])
def test_pruned_top_k_equals_full_scoring(tmp_path, monkeypatch, bm25):
    ix, _ = _index(tmp_path, bm25)
    # The same searches with pruning, then without (no term counts as common).
    before = ranking.lexical_pruned_segments
    results = {(q, k): ix.search_lexical(q, READER, k) for q in QUERIES for k in (1, 5, 10, 40)}
    assert _pruned_since(before) >= 5, "the test does not cover the pruned path"
    with monkeypatch.context() as m:
        m.setattr(ranking, "_COMMON_TERM", 10**12)
        before = ranking.lexical_pruned_segments
        for (q, k), got in results.items():
            full = ix.search_lexical(q, READER, k)
            score_of = {h.chunk_id: h.score for h in ix.search_lexical(q, READER, 10_000)}
            assert_same_ranking(got, [h.chunk_id for h in full], [h.score for h in full], score_of)
        assert _pruned_since(before) == 0
    ix.close()


def test_pruned_top_10_matches_rank_bm25(tmp_path):
    ix, live = _index(tmp_path, Bm25Params.okapi())
    before = ranking.lexical_pruned_segments
    oracle = BM25Okapi([analyze(r.text) for r in live])
    readable = np.array([i for i, r in enumerate(live) if r.acl.permits(READER)])
    ids = [live[i].chunk_id for i in readable]
    for q in QUERIES:
        scores = oracle.get_scores(analyze(q))[readable]
        order = np.argsort(-scores, kind="stable")[: min(10, int((scores > 0).sum()))]
        got = ix.search_lexical(q, READER, 10)
        score_of = dict(zip(ids, scores.tolist(), strict=True))
        assert_same_ranking(got, [ids[i] for i in order], scores[order], score_of)
    assert _pruned_since(before) >= 2
    assert WORDS[0] == "travel"  # the common word the queries rely on
    ix.close()
