"""Searcher over the embedded index, with a fake query encoder (a fixed vector per query)."""

from __future__ import annotations

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.fusion import fuse_by_document, reciprocal_rank_fusion
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from retrieval.models import SearchFilters
from retrieval.search import Searcher, SearchMode, document_of
from tests.retrieval.builders import DIM, record, unit

STAFF = Acl(allow_groups=frozenset({"staff"}))
SECRET = Acl(allow_users=frozenset({"boss"}))
ALICE = Principal.of("alice", ["staff"])


class FakeEncoder:
    """Maps known queries to given vectors; records calls so tests see when it is used."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors
        self.calls: list[str] = []

    def encode_query(self, text: str) -> np.ndarray:
        self.calls.append(text)
        return self.vectors[text]


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(1)
    near = unit(rng)
    recs = [
        record("lex", 0, "per diem travel rates", STAFF, rng=rng, path="hr/lex.md"),
        record("vec", 0, "something unrelated", STAFF, vector=near, path="ops/vec.md"),
        record("both", 0, "per diem", STAFF, vector=near + 0.1 * unit(rng), path="hr/both.md"),
        record("hidden", 0, "per diem travel rates", SECRET, vector=near),
    ]
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    ix.apply(WriteBatch(upserts=recs))
    encoder = FakeEncoder({"per diem travel": near})
    yield ix, encoder
    ix.close()


def test_hybrid_fuses_both_retrievers_with_citations(setup):
    ix, encoder = setup
    searcher = Searcher(ix, encoder, fusion="rrf", dense_weight=0.5, candidates=2)
    passages, ranked = searcher.search_ranked("per diem travel", ALICE, k=2)
    assert [h.chunk_id for h in ranked.lexical] == ["lex#0", "both#0"]
    assert [h.chunk_id for h in ranked.dense] == ["vec#0", "both#0"]
    fused = reciprocal_rank_fusion([ranked.lexical, ranked.dense], [0.5, 0.5])
    assert [p.chunk_id for p in passages] == [h.chunk_id for h in fused][:2]
    # Second in both lists beats first in one; ties keep the lexical list's order.
    assert [p.chunk_id for p in passages] == ["both#0", "lex#0"]
    assert passages[0].score == pytest.approx(2 * 0.5 / 62)
    cite = passages[0].citation
    assert (cite.doc_id, cite.path, cite.section, cite.pages) == (
        "both",
        "hr/both.md",
        ("Intro", "Part 0"),
        (1,),
    )
    assert cite.uri == "file:///corpus/both" and cite.doc_version == "v1"
    assert cite.char_end - cite.char_start == len(passages[0].text)
    assert encoder.calls == ["per diem travel"]


def test_modes_and_filters(setup):
    ix, encoder = setup
    searcher = Searcher(ix, encoder, fusion="blend")
    lexical = searcher.search_lexical_only("per diem travel", ALICE, k=5)
    assert lexical[0].chunk_id == "lex#0" and "vec#0" not in {p.chunk_id for p in lexical}
    assert encoder.calls == []  # lexical search needs no embedding
    dense = searcher.search_dense_only("per diem travel", ALICE, k=1)
    assert [p.chunk_id for p in dense] == ["vec#0"]
    hr_only = searcher.search("per diem travel", ALICE, 5, SearchFilters(path_prefixes=("hr/",)))
    assert {p.chunk_id for p in hr_only} == {"lex#0", "both#0"}


def test_nothing_unreadable_is_returned(setup):
    ix, encoder = setup
    searcher = Searcher(ix, encoder)
    for mode in SearchMode:
        got = {p.chunk_id for p in searcher.search("per diem travel", ALICE, 10, mode=mode)}
        assert "hidden#0" not in got
    boss = {p.chunk_id for p in searcher.search("per diem travel", Principal.of("boss"), 10)}
    assert boss == {"hidden#0"}


def test_argument_validation(setup):
    ix, encoder = setup
    searcher = Searcher(ix, encoder)
    with pytest.raises(ValueError, match="non-empty"):
        searcher.search("  ", ALICE)
    with pytest.raises(ValueError, match="k must be"):
        searcher.search("x", ALICE, k=0)
    with pytest.raises(TypeError, match="Principal"):
        searcher.search("x", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: hybrid, lexical, dense"):
        searcher.search("x", ALICE, mode="fuzzy")
    with pytest.raises(ValueError, match="valid: rrf, blend"):
        Searcher(ix, encoder, fusion="max")
    with pytest.raises(ValueError, match="dense_weight"):
        Searcher(ix, encoder, dense_weight=1.5)
    with pytest.raises(ValueError, match="needs an embedder"):
        Searcher(ix, None).search("x", ALICE)


class _ShiftingIndex:
    """Lexical hits over records that change between the search and the record read:
    some are gone (deleted by another generation), one was re-permissioned."""

    def __init__(self, records, gone: set[str]):
        self.records = {r.chunk_id: r for r in records}
        self.gone = gone
        self.reads: list[list[str]] = []

    def search_lexical(self, query, principal, n, filters):
        from retrieval.index.base import ScoredId

        ids = list(self.records)[:n]
        return [ScoredId(chunk_id, float(len(ids) - i)) for i, chunk_id in enumerate(ids)]

    def get_chunks(self, chunk_ids):
        self.reads.append(list(chunk_ids))
        return [self.records[c] for c in chunk_ids if c not in self.gone]


def test_passages_lost_between_search_and_read_are_replaced_by_the_next_hits():
    rng = np.random.default_rng(3)
    recs = [record(f"d{i}", 0, f"text {i}", STAFF, rng=rng) for i in range(12)]
    recs[2] = record("d2", 0, "now secret", SECRET, rng=rng)  # re-permissioned
    index = _ShiftingIndex(recs, gone={"d0#0", "d4#0"})
    got = Searcher(index, None).search("text", ALICE, k=5, mode="lexical")
    assert [p.chunk_id for p in got] == ["d1#0", "d3#0", "d5#0", "d6#0", "d7#0"]
    # Records are read k at a time, then only as many as are still missing.
    assert [len(r) for r in index.reads] == [5, 3]


def test_hybrid_lexical_step_overlaps_the_query_embedding(setup, monkeypatch):
    """The lexical search runs beside the embedding on an idle core; same answer inline."""
    import threading
    import time

    from retrieval import parallel

    ix, encoder = setup
    searcher = Searcher(ix, encoder, fusion="rrf", dense_weight=0.5, candidates=3)
    threads: list[str] = []
    lexical = ix.search_lexical

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return lexical(*args, **kwargs)

    def slow_encode(text: str) -> np.ndarray:
        time.sleep(0.2)  # a real query embedding takes ms: the helper has time to start
        return encoder.vectors[text]

    monkeypatch.setattr(ix, "search_lexical", recording)
    monkeypatch.setattr(encoder, "encode_query", slow_encode)
    beside = searcher.search_ranked("per diem travel", ALICE, k=3)
    monkeypatch.setattr(parallel, "helper_threads", lambda: 0)
    inline = searcher.search_ranked("per diem travel", ALICE, k=3)
    assert beside == inline
    here = threading.current_thread().name
    assert threads[1] == here
    if (parallel.os.cpu_count() or 1) > 1:
        assert threads[0].startswith("trove-query-helper")


@pytest.fixture
def one_long_document(tmp_path):
    """Four chunks of one document match best; two other documents match less."""
    rng = np.random.default_rng(7)
    recs = [record("manual", i, f"vacuum vacuum vacuum part {i}", STAFF, rng=rng) for i in range(4)]
    recs += [
        record("other", 0, "vacuum analyze tables", STAFF, rng=rng),
        record("third", 0, "vacuum full rewrites", STAFF, rng=rng),
    ]
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    ix.apply(WriteBatch(upserts=recs))
    yield ix
    ix.close()


def test_per_document_cap_lets_other_documents_into_the_top_k(one_long_document):
    ix = one_long_document
    uncapped = Searcher(ix, None, max_per_document=None).search(
        "vacuum", ALICE, k=3, mode="lexical"
    )
    assert {p.doc_id for p in uncapped} == {"manual"}  # three chunks of one document
    capped = Searcher(ix, None, max_per_document=1).search("vacuum", ALICE, k=3, mode="lexical")
    assert capped[0].doc_id == "manual"
    assert sorted(p.doc_id for p in capped) == ["manual", "other", "third"]
    two = Searcher(ix, None, max_per_document=2).search("vacuum", ALICE, k=4, mode="lexical")
    assert sorted(p.doc_id for p in two) == ["manual", "manual", "other", "third"]
    # The best chunk of the capped document is the one kept.
    assert capped[0].chunk_id == uncapped[0].chunk_id


def test_search_ranked_is_uncapped_unless_asked(one_long_document):
    searcher = Searcher(one_long_document, None, max_per_document=1)
    passages, _ = searcher.search_ranked("vacuum", ALICE, k=3, mode="lexical")
    assert {p.doc_id for p in passages} == {"manual"}
    passages, _ = searcher.search_ranked("vacuum", ALICE, 3, mode="lexical", max_per_document=1)
    assert len({p.doc_id for p in passages}) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_per_document_cap_must_be_positive(one_long_document, bad):
    with pytest.raises(ValueError, match="max_per_document"):
        Searcher(one_long_document, None, max_per_document=bad)


class OneRequestHybrid:
    """An index that also offers server-side hybrid search; records which path ran."""

    def __init__(self, inner, hybrid_combination="normalization"):
        self.inner = inner
        self.hybrid_combination = hybrid_combination
        self.hybrid_calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def search_hybrid(self, query, vector, principal, k, filters, **kwargs):
        self.hybrid_calls += 1
        return self.inner.search_lexical(query, principal, k, filters)


@pytest.mark.parametrize(
    ("fusion", "combination", "document_fusion", "server_side"),
    [
        ("zscore", "normalization", False, False),
        ("zscore", "rrf", False, False),
        ("blend", "normalization", False, True),
        ("rrf", "rrf", False, True),
        # The server would combine differently from the configured fusion: Trove fuses.
        ("blend", "rrf", False, False),
        ("rrf", "normalization", False, False),
        # No backend fuses per document: Trove does.
        ("blend", "normalization", True, False),
        ("rrf", "rrf", True, False),
    ],
)
def test_the_backend_fuses_only_when_it_combines_as_trove_would(
    setup, fusion, combination, document_fusion, server_side
):
    ix, encoder = setup
    index = OneRequestHybrid(ix, combination)
    searcher = Searcher(index, encoder, fusion=fusion, document_fusion=document_fusion)
    passages, ranked = searcher.search_ranked("per diem travel", ALICE, k=3)
    assert index.hybrid_calls == (1 if server_side else 0)
    assert bool(ranked.lexical) is not server_side and bool(ranked.dense) is not server_side
    assert passages


def test_document_fusion_ranks_a_document_by_its_best_passage_in_each_list(tmp_path):
    rng = np.random.default_rng(7)
    near = unit(rng)
    recs = [
        # "guide" matches the words in one passage and the meaning in another.
        record("guide", 0, "vacuum freeze vacuum freeze", STAFF, rng=rng, path="guide.md"),
        record("guide", 1, "reclaim storage", STAFF, vector=near, path="guide.md"),
        # "both" matches both, through one passage, a little less well each time.
        record("both", 0, "vacuum freeze", STAFF, vector=near + 0.4 * unit(rng), path="both.md"),
        *(record(f"f{i}", 0, f"filler {i} vacuum", STAFF, rng=rng) for i in range(6)),
    ]
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    try:
        ix.apply(WriteBatch(upserts=recs))
        encoder = FakeEncoder({"vacuum freeze": near})
        by_passage = Searcher(ix, encoder, fusion="zscore", dense_weight=0.5, document_fusion=False)
        by_document = Searcher(ix, encoder, fusion="zscore", dense_weight=0.5)
        assert by_document.document_fusion  # the default
        first = by_passage.search("vacuum freeze", ALICE, k=3)
        assert first[0].doc_id == "both"
        passages, ranked = by_document.search_ranked("vacuum freeze", ALICE, k=3)
        assert passages[0].doc_id == "guide"
        expected = fuse_by_document(
            "zscore", [ranked.lexical, ranked.dense], [0.5, 0.5], document_of
        )
        assert [p.chunk_id for p in passages] == [h.chunk_id for h in expected][:3]
    finally:
        ix.close()


def test_document_of_reads_the_chunk_id():
    assert document_of("guide#3") == "guide"
    assert document_of("a#b#12") == "a#b"
    assert document_of("plain") == "plain"
