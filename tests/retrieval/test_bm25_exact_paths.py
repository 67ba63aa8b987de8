"""Every lexical search path returns exactly a plain BM25 computed from the records.

The index picks a path per segment (every posting scored in bulk; postings filtered
by a sparse permission mask first; MaxScore skipping common terms; a fallback for
non-positive okapi weights) and keeps only rows above a lower bound of the k-th
score. Whatever the path, ids and scores must equal this file's straightforward
reference bit for bit, ties broken by index order (segment, then row), under
deletes, a principal reading 1% of the rows and a filter selecting 1%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from core.acl import Acl, Principal
from retrieval.analysis import analyze
from retrieval.index.base import ChunkRecord, WriteBatch
from retrieval.index.embedded import Bm25Params, EmbeddedIndex, ranking
from retrieval.index.embedded.bm25 import (
    idf_lucene,
    idf_okapi,
    length_norm,
    weighted_saturation,
)
from retrieval.models import SearchFilters
from tests.retrieval.builders import DIM, random_text, record

READER = Principal.of("reader", ["staff"])  # reads about half the rows
AUDITOR = Principal.of("auditor", ["audit"])  # reads about 1% of the rows
RARE = ["zebra", "quokka", "narwhal"]
QUERIES = [
    "travel zebra",  # the most common word with a rare one: MaxScore's case
    "travel leave policy quokka",
    "travel leave hotel per diem narwhal zebra",
    "zebra leave leave account",  # a repeated term counts twice
    "travel",
    "hotel receipt",
    "zebra narwhal",
]
N_DOCS = 800
PER_DOC = 3
# Deleted by the last batch, from the first two (a delete of a document the same batch
# upserts is followed by the upsert).
DELETED = {f"d{d:04d}" for d in range(5, N_DOCS // 2, 37)}


def _acl(rng: np.random.Generator) -> Acl:
    r = rng.random()
    if r < 0.012:
        return Acl(allow_groups=frozenset({"audit"}))
    return Acl(allow_groups=frozenset({"staff" if r < 0.5 else "other"}))


def _records() -> list[ChunkRecord]:
    rng = np.random.default_rng(5)
    texts: list[str] = []
    records = []
    for d in range(N_DOCS):
        acl = _acl(rng)
        for c in range(PER_DOC):
            if texts and rng.random() < 0.3:
                text = texts[int(rng.integers(len(texts)))]  # a duplicate: exact score ties
            else:
                text = random_text(rng)
                if rng.random() < 0.08:
                    text += " " + str(rng.choice(RARE))
            texts.append(text)
            # "team07/..." holds 1% of the documents, for a narrow path filter.
            path = f"team{d % 100:02d}/d{d:04d}.md"
            records.append(record(f"d{d:04d}", c, text, acl, rng=rng, path=path))
    return records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    records = _records()
    ix = EmbeddedIndex.open(tmp_path_factory.mktemp("exact") / "ix", create=True, dimensions=DIM)
    third = len(records) // 3 // PER_DOC * PER_DOC  # batches end between documents
    ix.apply(WriteBatch(upserts=records[:third]))
    ix.apply(WriteBatch(upserts=records[third : 2 * third]))
    ix.apply(WriteBatch(upserts=records[2 * third :], delete_docs=DELETED))
    # Three segments (no merge), rows in record order: the index's tie order.
    assert len(ix._snap().views) == 3
    live = [r for r in records if r.doc_id not in DELETED]
    yield ix, live
    ix.close()


def reference(
    live: list[ChunkRecord],
    query: str,
    readable: Callable[[ChunkRecord], bool],
    k: int,
    params: Bm25Params,
    average_idf: float = 0.0,
) -> list[tuple[str, float]]:
    """Plain BM25 over the live records, one row at a time, terms summed in query order."""
    docs = [Counter(analyze(r.text)) for r in live]
    lengths = np.array([sum(d.values()) for d in docs])
    norm = length_norm(lengths, int(lengths.sum()) / len(live), params.k1, params.b)
    q = Counter(analyze(query))
    df = np.array([sum(t in d for d in docs) for t in q], dtype=np.float64)
    if params.variant == "okapi":
        idf = idf_okapi(len(live), df, average_idf, params.epsilon)
    else:
        idf = idf_lucene(len(live), df)
    weight = {t: float(idf[i]) * q[t] for i, t in enumerate(q) if df[i] > 0}
    scored = []
    for i, (r, d) in enumerate(zip(live, docs, strict=True)):
        if not readable(r) or not any(t in d for t in weight):
            continue
        score = 0.0
        for t, w in weight.items():
            if d[t]:
                score += w * (d[t] * (params.k1 + 1.0) / (d[t] + float(norm[i])))
        scored.append((-score, i, r.chunk_id))
    return [(cid, -neg) for neg, _, cid in sorted(scored)[:k]]


def _got(ix: EmbeddedIndex, query: str, principal: Principal, k: int, **filters):
    hits = ix.search_lexical(query, principal, k, SearchFilters(**filters))
    return [(h.chunk_id, h.score) for h in hits]


def test_weighted_saturation_is_bit_identical():
    rng = np.random.default_rng(3)
    tf = rng.integers(1, 30, 5000).astype(np.float32)
    norm = length_norm(rng.integers(1, 400, 5000), 57.3, 1.2, 0.75)
    for k1, w in ((1.2, 2.7183), (0.0, 0.31), (1.5, 11.0)):
        tf64 = tf.astype(np.float64)
        expected = w * (tf64 * (k1 + 1.0) / (tf64 + norm))  # the textbook expression
        got = weighted_saturation(tf, norm, k1, w)
        assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))


@pytest.mark.parametrize("k", [1, 7, 10, 50, 10_000])
def test_bulk_and_maxscore_paths_equal_reference(corpus, k):
    ix, live = corpus
    before = ranking.lexical_pruned_segments
    for q in QUERIES:
        expected = reference(live, q, lambda r: r.acl.permits(READER), k, Bm25Params())
        assert _got(ix, q, READER, k) == expected, q
    if k <= 10:  # small k: the rare terms' k-th score beats the common terms' bound
        assert ranking.lexical_pruned_segments > before, "MaxScore path not exercised"


def test_ties_at_the_kth_score_keep_index_order(corpus):
    ix, live = corpus
    cut_ties = 0
    for q in QUERIES:
        full = reference(live, q, lambda r: r.acl.permits(READER), 10_000, Bm25Params())
        scores = [s for _, s in full]
        for k in range(1, min(len(full), 60)):
            if scores[k - 1] == scores[k]:  # a tie straddles the k-th place
                cut_ties += 1
                assert _got(ix, q, READER, k) == full[:k], (q, k)
    assert cut_ties >= 20, "the corpus has too few ties at a cut"


@pytest.mark.parametrize("k", [1, 5, 10, 100])
def test_sparse_mask_paths_equal_reference(corpus, k):
    ix, live = corpus
    team07 = next(r.path for r in live if r.path.startswith("team07/")).split("/")[0] + "/"
    readable = [r for r in live if r.acl.permits(AUDITOR)]
    assert 0.005 < len(readable) / len(live) < 0.02
    narrow = [r for r in live if r.acl.permits(READER) and r.path.startswith(team07)]
    assert 0.002 < len(narrow) / len(live) < 0.01
    for q in QUERIES:
        expected = reference(live, q, lambda r: r.acl.permits(AUDITOR), k, Bm25Params())
        assert _got(ix, q, AUDITOR, k) == expected, q
        expected = reference(
            live, q, lambda r: r.acl.permits(READER) and r.path.startswith(team07), k, Bm25Params()
        )
        assert _got(ix, q, READER, k, path_prefixes=(team07,)) == expected, q


def test_maxscore_equals_full_scoring_bit_for_bit(corpus, monkeypatch):
    ix, _ = corpus
    pruned = {(q, k): _got(ix, q, READER, k) for q in QUERIES for k in (1, 3, 10)}
    monkeypatch.setattr(ranking, "_COMMON_TERM", 10**12)  # no common terms: no pruning
    before = ranking.lexical_pruned_segments
    assert {(q, k): _got(ix, q, READER, k) for q, k in pruned} == pruned
    assert ranking.lexical_pruned_segments == before


def test_maxscore_keeps_a_row_that_wins_on_common_terms(tmp_path, monkeypatch):
    # Every chunk has 20 terms, so every length norm is k1. "zulu" (5 chunks, idf 3.60)
    # is rare; "alpha" and "bravo" (111 chunks each, idf 0.59) are common: bound 2.59.
    # Four chunks say "zulu" three times: theta = 5.65 for k <= 4. The winner says "zulu"
    # once (partial 3.60, 0.54 above theta - bound) and each common word eight times:
    # 5.85. A floor above theta - 0.79 * bound loses it.
    monkeypatch.setattr(ranking, "_LOOKUP_COST", 0)  # MaxScore wherever its bound allows

    def text(*words: str) -> str:
        fill = ["cat", "dog", "fox", "owl", "elk", "yak", "emu", "gnu", "ram", "eel"]
        return " ".join([*words, *(fill[i % len(fill)] for i in range(20 - len(words)))])

    texts = [text(*["alpha"] * 8, *["bravo"] * 8, "zulu")]
    texts += [text("zulu", "zulu", "zulu")] * 4
    texts += [text("alpha", "bravo")] * 110
    texts += [text()] * 85
    assert {len(analyze(t)) for t in texts} == {20}
    rng = np.random.default_rng(8)
    live = [record(f"c{i:03d}", 0, t, Acl(public=True), rng=rng) for i, t in enumerate(texts)]
    anyone = Principal.of("anyone")
    with EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=live))
        before = ranking.lexical_pruned_segments
        for k in (1, 2, 4, 9, 30):
            expected = reference(live, "alpha bravo zulu", lambda r: True, k, Bm25Params())
            assert expected[0][0] == "c000#0"
            assert _got(ix, "alpha bravo zulu", anyone, k) == expected, k
        assert ranking.lexical_pruned_segments - before == 3  # k = 1, 2, 4


def test_non_positive_okapi_weights_keep_every_hit(tmp_path):
    # Words in most chunks get a negative raw idf, and so does the average: the floor
    # epsilon * average_idf is negative, a term in exactly half the chunks weighs 0.
    texts = [
        "walrus lynx otter",
        "walrus lynx otter",
        "walrus lynx badger",
        "walrus heron",
    ]
    everyone = Principal.of("anyone")
    live = [
        record(f"n{i}", 0, t, Acl(public=True), rng=np.random.default_rng(i))
        for i, t in enumerate(texts)
    ]
    params = Bm25Params.okapi()
    with EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM, bm25=params) as ix:
        ix.apply(WriteBatch(upserts=live))
        average = ix._snap().okapi_average_idf()
        assert average < 0
        oracle = BM25Okapi([analyze(t) for t in texts])
        for q in ["lynx otter", "walrus", "otter", "heron walrus", "lynx"]:
            for k in (1, 2, 10):
                expected = reference(live, q, lambda r: True, k, params, average)
                got = _got(ix, q, everyone, k)
                assert got == expected, (q, k)
                # Every chunk holding a query term is returned, even at a score <= 0.
                holding = sum(any(t in analyze(x) for t in analyze(q)) for x in texts)
                assert len(got) == min(k, holding)
                want = oracle.get_scores(analyze(q))
                for cid, score in got:
                    assert score == pytest.approx(want[int(cid[1])], rel=1e-9, abs=1e-12)
