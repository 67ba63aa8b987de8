"""EmbeddedIndex: writes, reads, reopen, refresh, filters and errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.index.base import (
    IndexBackend,
    IndexBackendError,
    IndexCorruptError,
    IndexNotFoundError,
    WriteBatch,
)
from retrieval.index.embedded import EmbeddedIndex
from retrieval.index.embedded.manifest import read_current
from retrieval.index.embedded.merge_policy import MERGE_FACTOR
from retrieval.models import SearchFilters
from tests.retrieval.builders import DIM, doc_records, record, unit

STAFF = Acl(allow_groups=frozenset({"staff"}))
ALICE = Principal.of("alice", ["staff"])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def index(tmp_path):
    ix = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
    yield ix
    ix.close()


def ids(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_is_an_index_backend(index):
    assert isinstance(index, IndexBackend)


def test_missing_index_says_to_ingest(tmp_path):
    with pytest.raises(IndexNotFoundError, match="trove ingest"):
        EmbeddedIndex.open(tmp_path / "nothing")


def test_upsert_then_search_and_read_back(index, rng):
    index.apply(WriteBatch(upserts=doc_records("d1", ["hotel travel", "per diem"], STAFF, rng)))
    hits = index.search_lexical("travel", ALICE, 5)
    assert ids(hits) == ["d1#0"]
    rec = index.get_chunks(["d1#1", "missing", "d1#0"])
    assert [r.chunk_id for r in rec] == ["d1#1", "d1#0"]
    assert rec[0].section == ("Intro", "Part 1") and rec[0].pages == (2,)
    assert rec[0].modified_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert rec[0].acl == STAFF and rec[0].vector is None
    assert [r.ord for r in index.document_chunks("d1")] == [0, 1]
    assert index.stats().chunks == 2 and index.stats().documents == 1


def test_reupsert_replaces_every_chunk_of_the_document(index, rng):
    index.apply(
        WriteBatch(upserts=doc_records("d1", ["a travel", "b travel", "c travel"], STAFF, rng))
    )
    index.apply(WriteBatch(upserts=doc_records("d1", ["new travel text"], STAFF, rng)))
    assert [r.text for r in index.document_chunks("d1")] == ["new travel text"]
    assert ids(index.search_lexical("travel", ALICE, 10)) == ["d1#0"]
    assert len(index.search_dense(unit(rng), ALICE, 10)) == 1
    assert set(index.all_acls()) == {"d1#0"}
    assert index.stats().chunks == 1


def test_delete_docs(index, rng):
    index.apply(
        WriteBatch(
            upserts=doc_records("d1", ["travel"], STAFF, rng)
            + doc_records("d2", ["travel too"], STAFF, rng)
        )
    )
    index.apply(WriteBatch(delete_docs={"d1", "never-existed"}))
    assert index.doc_ids() == {"d2"}
    assert ids(index.search_lexical("travel", ALICE, 10)) == ["d2#0"]
    assert index.get_chunks(["d1#0"]) == []
    assert index.document_chunks("d1") == []


def test_acl_update_changes_access_without_rewriting_vectors(index, rng):
    index.apply(WriteBatch(upserts=doc_records("d1", ["travel", "hotel"], STAFF, rng)))
    seg_dirs = sorted(p.name for p in (index.root / "segments").iterdir())
    vec_before = (index.root / "segments" / seg_dirs[0] / "vectors.npy").read_bytes()
    index.apply(WriteBatch(acl_updates={"d1": Acl(allow_users=frozenset({"bob"}))}))
    assert index.search_lexical("travel", ALICE, 5) == []
    assert ids(index.search_lexical("travel", Principal.of("bob"), 5)) == ["d1#0"]
    assert sorted(p.name for p in (index.root / "segments").iterdir()) == seg_dirs
    assert (index.root / "segments" / seg_dirs[0] / "vectors.npy").read_bytes() == vec_before
    assert {a.allow_users for a in index.all_acls().values()} == {frozenset({"bob"})}


def test_batch_order_delete_then_upsert_then_acl(index, rng):
    index.apply(WriteBatch(upserts=doc_records("d1", ["old travel"], STAFF, rng)))
    bob = Acl(allow_users=frozenset({"bob"}))
    index.apply(
        WriteBatch(
            delete_docs={"d1"},
            upserts=doc_records("d1", ["new travel"], STAFF, rng),
            acl_updates={"d1": bob},
        )
    )
    (rec,) = index.document_chunks("d1")
    assert rec.text == "new travel" and rec.acl == bob


def test_reopen_from_disk_gives_the_same_answers(tmp_path, rng):
    path = tmp_path / "ix"
    with EmbeddedIndex.open(path, create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=doc_records("d1", ["travel policy", "hotel"], STAFF, rng)))
        ix.apply(WriteBatch(upserts=doc_records("d2", ["travel"], STAFF, rng)))
        q = unit(rng)
        lex, dense, stats = (
            ix.search_lexical("travel", ALICE, 5),
            ix.search_dense(q, ALICE, 5),
            ix.stats(),
        )
    with EmbeddedIndex.open(path) as again:
        assert again.search_lexical("travel", ALICE, 5) == lex
        assert again.search_dense(q, ALICE, 5) == dense
        assert again.stats() == stats


def test_refresh_sees_new_generation_while_old_reader_keeps_its_own(tmp_path, rng):
    path = tmp_path / "ix"
    writer = EmbeddedIndex.open(path, create=True, dimensions=DIM)
    writer.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
    reader = EmbeddedIndex.open(path)
    for n in range(2, 6):  # several commits: the reader's generation's files get collected
        writer.apply(
            WriteBatch(
                delete_docs={f"d{n - 1}"}, upserts=doc_records(f"d{n}", ["travel"], STAFF, rng)
            )
        )
    assert ids(reader.search_lexical("travel", ALICE, 5)) == ["d1#0"]
    assert reader.get_chunks(["d1#0"])[0].text == "travel"
    assert reader.refresh() is True
    assert ids(reader.search_lexical("travel", ALICE, 5)) == ["d5#0"]
    assert reader.refresh() is False
    assert reader.generation == writer.generation == read_current(path)


def test_two_writer_instances_build_on_each_others_commits(tmp_path, rng):
    path = tmp_path / "ix"
    a = EmbeddedIndex.open(path, create=True, dimensions=DIM)
    b = EmbeddedIndex.open(path)
    a.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
    b.apply(WriteBatch(upserts=doc_records("d2", ["travel"], STAFF, rng)))  # b was stale
    a.refresh()
    assert a.doc_ids() == b.doc_ids() == {"d1", "d2"}


def test_many_batches_merge_segments_and_stay_correct(index, rng):
    expected = {}
    for i in range(20):
        doc = f"d{i % 7}"
        text = f"travel batch{i}"
        index.apply(WriteBatch(upserts=doc_records(doc, [text, "hotel"], STAFF, rng)))
        expected[doc] = text
    assert len(index._snap().views) <= MERGE_FACTOR + 1
    assert {d: index.document_chunks(d)[0].text for d in index.doc_ids()} == expected
    assert index.stats().chunks == 14
    # Only the last two generations' segments stay on disk.
    assert len(list((index.root / "segments").iterdir())) <= 2 * (MERGE_FACTOR + 2)


def test_filters_narrow_results(index, rng):
    recs = [
        record("a", 0, "travel", STAFF, rng=rng, source="wiki", doc_type="pdf", path="hr/a.pdf",
               modified_at=datetime(2023, 1, 1, tzinfo=UTC)),
        record("b", 0, "travel", STAFF, rng=rng, source="handbook", doc_type="md", path="ops/b.md",
               modified_at=datetime(2024, 6, 1, tzinfo=UTC)),
        record("c", 0, "travel", STAFF, rng=rng, source="handbook", doc_type="md", path="hr/c.md",
               modified_at=None),
    ]  # fmt: skip
    index.apply(WriteBatch(upserts=recs))
    q = unit(rng)

    def both(filters: SearchFilters) -> set[str]:
        lex = set(ids(index.search_lexical("travel", ALICE, 10, filters)))
        dense = set(ids(index.search_dense(q, ALICE, 10, filters)))
        assert lex == dense
        return lex

    assert both(SearchFilters()) == {"a#0", "b#0", "c#0"}
    assert both(SearchFilters(sources=frozenset({"handbook"}))) == {"b#0", "c#0"}
    assert both(SearchFilters(doc_types=frozenset({"pdf"}))) == {"a#0"}
    assert both(SearchFilters(path_prefixes=("hr/",))) == {"a#0", "c#0"}
    assert both(SearchFilters(modified_after=datetime(2024, 1, 1, tzinfo=UTC))) == {"b#0"}
    assert both(SearchFilters(modified_before=datetime(2024, 1, 1))) == {"a#0"}
    assert both(SearchFilters(sources=frozenset({"nope"}))) == set()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"vector": None}, "no vector"),
        ({"vector": np.ones(DIM + 1, dtype=np.float32)}, "dimensions"),
        ({"vector": np.full(DIM, np.nan, dtype=np.float32)}, "finite"),
    ],
)
def test_bad_upserts_are_refused_with_the_chunk_id(index, kwargs, error):
    rec = record("d1", 0, "x", STAFF, **kwargs)
    if kwargs["vector"] is None:
        import dataclasses

        rec = dataclasses.replace(rec, vector=None)
    with pytest.raises(ValueError, match=error) as info:
        index.apply(WriteBatch(upserts=[rec]))
    assert "d1#0" in str(info.value)
    assert index.generation == 0


def test_chunk_id_owned_by_another_document_is_refused(index, rng):
    index.apply(WriteBatch(upserts=doc_records("d1", ["x"], STAFF, rng)))
    import dataclasses

    thief = dataclasses.replace(record("d2", 0, "y", STAFF, rng=rng), chunk_id="d1#0")
    with pytest.raises(ValueError, match="already used by document 'd1'"):
        index.apply(WriteBatch(upserts=[thief]))


def test_search_argument_errors(index, rng):
    with pytest.raises(ValueError, match="k must be"):
        index.search_lexical("x", ALICE, 0)
    with pytest.raises(TypeError, match="Principal"):
        index.search_lexical("x", None, 3)  # type: ignore[arg-type]
    index.apply(WriteBatch(upserts=doc_records("d1", ["x"], STAFF, rng)))
    with pytest.raises(ValueError, match="dimensions"):
        index.search_dense(np.ones(3), ALICE, 3)
    with pytest.raises(ValueError, match="non-zero"):
        index.search_dense(np.zeros(DIM), ALICE, 3)


def test_stop_word_query_returns_nothing(index, rng):
    index.apply(WriteBatch(upserts=doc_records("d1", ["the travel"], STAFF, rng)))
    assert index.search_lexical("the of and", ALICE, 3) == []


def test_dimension_mismatch_on_open(tmp_path, rng):
    path = tmp_path / "ix"
    with EmbeddedIndex.open(path, create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=doc_records("d1", ["x"], STAFF, rng)))
    with pytest.raises(IndexBackendError, match=f"holds {DIM}-dimensional"):
        EmbeddedIndex.open(path, dimensions=DIM * 2)


def test_corrupt_files_raise_index_corrupt_error(tmp_path, rng):
    path = tmp_path / "ix"
    with EmbeddedIndex.open(path, create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=doc_records("d1", ["x"], STAFF, rng)))
    (path / "CURRENT").write_text("garbage")
    with pytest.raises(IndexCorruptError, match="generation number"):
        EmbeddedIndex.open(path)
    (path / "CURRENT").write_text("1\n")
    manifest = json.loads((path / "manifest-0000000001.json").read_text())
    seg = manifest["segments"][0]["id"]
    (path / "segments" / seg / "doc_len.npy").write_bytes(b"not numpy")
    with pytest.raises(IndexCorruptError):
        EmbeddedIndex.open(path)


def test_closed_index_refuses_calls(tmp_path):
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    ix.close()
    with pytest.raises(IndexBackendError, match="closed"):
        ix.search_lexical("x", ALICE, 1)
