"""One semantics, two backends: the conformance suite every ``IndexBackend`` passes.

A backend's test module defines ``class TestX(IndexConformance)`` and overrides
the ``index`` fixture (a fresh, empty index for ``DIM``-dimensional vectors).
A backend that cannot run k-NN (osmem-server) sets ``dense_unsupported`` to the
reason; only the dense and hybrid tests skip then, everything lexical, ACL and
CRUD runs. Data is small and vectors are random unit vectors: no model.

The ACL oracle is :meth:`core.acl.Acl.permits` itself, and the filter oracle
the rules written in ``retrieval/index/base.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from core.acl import Acl, AclLayer, Principal
from retrieval.fusion import FusionMethod, fuse
from retrieval.index.base import (
    ChunkRecord,
    DocumentState,
    IndexBackend,
    InvalidBatchError,
    WriteBatch,
)
from retrieval.models import ScoredId, SearchFilters
from tests.retrieval.builders import DIM, doc_records, record, unit

STAFF = Acl(allow_groups=frozenset({"staff"}))
ALICE = Principal.of("alice", ["staff"])
BOB = Principal.of("bob", ["eng"])

USERS = ("u0", "u1", "u2")
GROUPS = ("g0", "g1", "g2")
TENANTS = (None, "t1", "t2")


def ids(hits: list[ScoredId]) -> list[str]:
    return [h.chunk_id for h in hits]


def random_acl(rng: np.random.Generator) -> Acl:
    def some(names: tuple[str, ...], p: float) -> frozenset[str]:
        return frozenset(n for n in names if rng.random() < p)

    return Acl(
        allow_users=some(USERS, 0.3),
        allow_groups=some(GROUPS, 0.3),
        deny_users=some(USERS, 0.15),
        deny_groups=some(GROUPS, 0.15),
        tenant=TENANTS[int(rng.integers(0, 3))],
        public=bool(rng.random() < 0.2),
        # Restriction layers (AND of ORs) on about a third of the ACLs.
        layers=tuple(
            AclLayer(some(USERS, 0.4), some(GROUPS, 0.4))
            for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.35 else 0)
        ),
    )


def all_principals() -> list[Principal]:
    group_sets = ((), ("g0",), ("g1", "g2"))
    return [
        Principal.of(user, groups, tenant)
        for user, groups, tenant in itertools.product((*USERS, "stranger"), group_sets, TENANTS)
    ]


def hybrid(index: IndexBackend, query: str, vector: np.ndarray, principal: Principal, k: int):
    """One-request hybrid where the backend has it, else the Searcher's client-side fusion."""
    if hasattr(index, "search_hybrid"):
        return index.search_hybrid(query, vector, principal, k)
    lists = [index.search_lexical(query, principal, k), index.search_dense(vector, principal, k)]
    return fuse(FusionMethod.RRF, lists, [0.5, 0.5], rrf_k=60)[:k]


class IndexConformance:
    """Mixin: inherit and override the ``index`` fixture."""

    dense_unsupported: str | None = None

    @pytest.fixture
    def index(self) -> IndexBackend:
        raise NotImplementedError("a backend's test class overrides the `index` fixture")

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(11)

    def require_dense(self) -> None:
        if self.dense_unsupported:
            pytest.skip(self.dense_unsupported)

    # ------------------------------------------------------------------ contract

    def test_is_an_index_backend(self, index):
        assert isinstance(index, IndexBackend)

    def test_empty_index_answers_nothing(self, index, rng):
        assert index.search_lexical("travel", ALICE, 5) == []
        assert index.get_chunks(["nope"]) == []
        assert index.document_chunks("nope") == []
        assert index.doc_ids() == set()
        assert dict(index.all_acls()) == {}
        assert index.stats().chunks == 0

    def test_search_needs_a_principal_and_a_positive_k(self, index, rng):
        index.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
        with pytest.raises(TypeError, match="Principal"):
            index.search_lexical("travel", "alice", 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="k must be"):
            index.search_lexical("travel", ALICE, 0)
        with pytest.raises(TypeError, match="SearchFilters"):
            index.search_lexical("travel", ALICE, 5, {"sources": ["x"]})  # type: ignore[arg-type]

    # ------------------------------------------------------------------ ACL semantics

    def test_acl_allow_deny_public_and_fail_closed(self, index, rng):
        acls = {
            "public": Acl.public_acl(),
            "alice": Acl(allow_users=frozenset({"alice"})),
            "staff": STAFF,
            "public-deny-alice": Acl(public=True, deny_users=frozenset({"alice"})),
            "staff-deny-eng": Acl(
                allow_users=frozenset({"bob"}),
                allow_groups=frozenset({"staff"}),
                deny_groups=frozenset({"eng"}),
            ),
            "empty": Acl.empty(),
        }
        index.apply(
            WriteBatch(
                upserts=[record(name, 0, "policy text", acl, rng=rng) for name, acl in acls.items()]
            )
        )

        def readable(p: Principal) -> set[str]:
            return {c.split("#")[0] for c in ids(index.search_lexical("policy", p, 50))}

        assert readable(ALICE) == {"public", "alice", "staff", "staff-deny-eng"}
        assert readable(BOB) == {"public", "public-deny-alice"}
        assert readable(Principal.of("carol", ["staff", "eng"])) == {
            "public",
            "staff",
            "public-deny-alice",
        }
        # The empty ACL is stored (audits see it) but nobody ever reads it.
        assert index.all_acls()["empty#0"] == Acl.empty()
        assert [r.chunk_id for r in index.get_chunks(["empty#0"])] == ["empty#0"]

    def test_tenants(self, index, rng):
        index.apply(
            WriteBatch(
                upserts=[
                    record("none", 0, "policy", Acl.public_acl(), rng=rng),
                    record("t1", 0, "policy", Acl.public_acl("t1"), rng=rng),
                    record("t2", 0, "policy", Acl(allow_users=frozenset({"u"}), tenant="t2")),
                ]
            )
        )

        def readable(p: Principal) -> set[str]:
            return {c.split("#")[0] for c in ids(index.search_lexical("policy", p, 50))}

        # A chunk without a tenant is readable by any tenant, and by no-tenant principals.
        assert readable(Principal.of("u")) == {"none"}
        assert readable(Principal.of("u", tenant="t1")) == {"none", "t1"}
        assert readable(Principal.of("u", tenant="t2")) == {"none", "t2"}
        assert readable(Principal.of("x", tenant="t2")) == {"none"}

    def _random_acl_corpus(self, index, rng) -> dict[str, Acl]:
        acls = {}
        records = []
        for i in range(40):
            acl = random_acl(rng)
            if i % 10 == 0:
                acl = Acl.empty()
            records.append(record(f"doc{i:02d}", 0, f"policy number {i}", acl, rng=rng))
            acls[f"doc{i:02d}#0"] = acl
        index.apply(WriteBatch(upserts=records))
        return acls

    def test_lexical_returns_exactly_what_acl_permits(self, index, rng):
        acls = self._random_acl_corpus(index, rng)
        for p in all_principals():
            expected = {c for c, acl in acls.items() if acl.permits(p)}
            assert set(ids(index.search_lexical("policy", p, 100))) == expected, p

    def test_dense_returns_exactly_what_acl_permits(self, index, rng):
        self.require_dense()
        acls = self._random_acl_corpus(index, rng)
        for p in all_principals():
            expected = {c for c, acl in acls.items() if acl.permits(p)}
            assert set(ids(index.search_dense(unit(rng), p, 100))) == expected, p

    def test_hybrid_returns_only_what_acl_permits(self, index, rng):
        self.require_dense()
        acls = self._random_acl_corpus(index, rng)
        for p in all_principals()[::3]:
            expected = {c for c, acl in acls.items() if acl.permits(p)}
            got = ids(hybrid(index, "policy", unit(rng), p, 100))
            assert set(got) == expected, p

    # ------------------------------------------------------------------ filters

    def test_filters_narrow(self, index, rng):
        t = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
        records = [
            record("a", 0, "policy", STAFF, rng=rng, source="hr", doc_type="pdf", path="hr/a.pdf",
                   modified_at=t[0]),
            record("b", 0, "policy", STAFF, rng=rng, source="hr", doc_type="md", path="hr/x/b.md",
                   modified_at=t[1]),
            record("c", 0, "policy", STAFF, rng=rng, source="eng", doc_type="md", path="eng/c.md",
                   modified_at=t[2]),
            record("d", 0, "policy", STAFF, rng=rng, source="eng", doc_type="md", path="hrx/d.md",
                   modified_at=None),
        ]  # fmt: skip
        index.apply(WriteBatch(upserts=records))

        def got(**kw) -> set[str]:
            hits = index.search_lexical("policy", ALICE, 50, SearchFilters(**kw))
            return {c.split("#")[0] for c in ids(hits)}

        assert got() == {"a", "b", "c", "d"}
        assert got(sources=frozenset({"hr"})) == {"a", "b"}
        assert got(doc_types=frozenset({"md"})) == {"b", "c", "d"}
        assert got(sources=frozenset({"hr"}), doc_types=frozenset({"md"})) == {"b"}
        assert got(path_prefixes=("hr/",)) == {"a", "b"}
        assert got(path_prefixes=("hr/x/", "eng/")) == {"b", "c"}
        assert got(modified_after=t[1]) == {"b", "c"}  # inclusive; no date never passes
        assert got(modified_before=t[1]) == {"a"}  # exclusive
        assert got(modified_after=t[0], modified_before=t[2]) == {"a", "b"}
        naive = datetime(2024, 2, 1)  # naive datetimes are UTC
        assert got(modified_after=naive) == {"b", "c"}
        assert got(sources=frozenset({"nowhere"})) == set()

    def test_filters_apply_to_dense(self, index, rng):
        self.require_dense()
        index.apply(
            WriteBatch(
                upserts=[
                    record("a", 0, "policy", STAFF, rng=rng, source="hr"),
                    record("b", 0, "policy", STAFF, rng=rng, source="eng"),
                ]
            )
        )
        hits = index.search_dense(unit(rng), ALICE, 10, SearchFilters(sources=frozenset({"eng"})))
        assert ids(hits) == ["b#0"]

    # ------------------------------------------------------------------ writes

    def test_citations_round_trip(self, index, rng):
        long_id = "share:/" + "deep/" * 120 + "file.md#0"
        originals = [
            ChunkRecord(
                chunk_id="wiki:eng/VPN setup.md#3",
                doc_id="wiki:eng/VPN setup.md",
                source="wiki",
                ord=3,
                text="Réinitialiser le jeton VPN — naïve café ✓",
                title="VPN – setup",
                uri="file:///srv/wiki/eng/VPN%20setup.md",
                path="eng/VPN setup.md",
                section=("Setup", "Tokens & keys"),
                pages=(4, 5),
                char_start=1200,
                char_end=1290,
                doc_version="sha1:abc",
                doc_type="md",
                modified_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
                acl=Acl(
                    allow_users=frozenset({"User-1"}),
                    allow_groups=frozenset({"eng", "ops"}),
                    deny_users=frozenset({"mallory"}),
                    tenant="acme",
                ),
                vector=unit(rng),
                metadata={
                    "risk": [{"type": "prompt_injection", "score": 0.91}],
                    "pii": {"email": 2},
                },
            ),
            dataclasses.replace(
                record("share:/" + "deep/" * 120 + "file.md", 0, "long id", STAFF, rng=rng),
                section=(),
                pages=(),
                modified_at=None,
            ),
        ]
        assert len(long_id.encode()) > 512
        index.apply(WriteBatch(upserts=originals))
        got = index.get_chunks([long_id, "missing", originals[0].chunk_id])
        assert got == [originals[1], originals[0]]  # equality ignores vectors
        assert got[1].metadata == originals[0].metadata and got[0].metadata == {}
        assert all(r.vector is None for r in got)
        assert index.document_chunks(originals[0].doc_id) == [originals[0]]
        assert index.doc_ids() == {originals[0].doc_id, originals[1].doc_id}

    def test_reupsert_replaces_every_chunk_of_the_document(self, index, rng):
        index.apply(
            WriteBatch(upserts=doc_records("d1", ["a travel", "b travel", "c"], STAFF, rng))
        )
        index.apply(WriteBatch(upserts=doc_records("d2", ["other travel"], STAFF, rng)))
        index.apply(WriteBatch(upserts=doc_records("d1", ["new travel text"], STAFF, rng)))
        assert [r.text for r in index.document_chunks("d1")] == ["new travel text"]
        assert set(ids(index.search_lexical("travel", ALICE, 10))) == {"d1#0", "d2#0"}
        assert set(index.all_acls()) == {"d1#0", "d2#0"}
        stats = index.stats()
        assert (stats.chunks, stats.documents) == (2, 2)

    def test_delete_docs_and_delete_then_upsert_in_one_batch(self, index, rng):
        index.apply(
            WriteBatch(
                upserts=doc_records("d1", ["travel"], STAFF, rng)
                + doc_records("d2", ["travel", "hotel"], STAFF, rng)
                + doc_records("d3", ["travel"], STAFF, rng)
            )
        )
        index.apply(
            WriteBatch(
                delete_docs={"d2", "d3", "never-existed"},
                upserts=doc_records("d3", ["travel again"], STAFF, rng),
            )
        )
        assert index.doc_ids() == {"d1", "d3"}
        assert index.get_chunks(["d2#0", "d2#1"]) == []
        assert [r.text for r in index.document_chunks("d3")] == ["travel again"]
        assert set(ids(index.search_lexical("travel hotel", ALICE, 10))) == {"d1#0", "d3#0"}

    def test_acl_update_changes_readers_and_nothing_else(self, index, rng):
        records = doc_records("d1", ["travel policy", "hotel policy"], STAFF, rng)
        index.apply(WriteBatch(upserts=records + doc_records("d2", ["policy"], STAFF, rng)))
        before = index.document_chunks("d1")
        new_acl = Acl(allow_users=frozenset({"bob"}), tenant=None)
        index.apply(WriteBatch(acl_updates={"d1": new_acl, "absent-doc": Acl.public_acl()}))
        assert ids(index.search_lexical("policy", ALICE, 10)) == ["d2#0"]
        assert set(ids(index.search_lexical("policy", BOB, 10))) == {"d1#0", "d1#1"}
        after = index.document_chunks("d1")
        assert [r.acl for r in after] == [new_acl, new_acl]
        # Text, citation fields and ids untouched (ChunkRecord equality minus the ACL).
        assert [dataclass_without_acl(r) for r in after] == [
            dataclass_without_acl(r) for r in before
        ]
        assert index.doc_ids() == {"d1", "d2"}

    def test_acl_update_keeps_vectors(self, index, rng):
        self.require_dense()
        records = doc_records("d1", ["travel policy"], STAFF, rng)
        index.apply(WriteBatch(upserts=records))
        index.apply(WriteBatch(acl_updates={"d1": Acl(allow_users=frozenset({"bob"}))}))
        hits = index.search_dense(records[0].vector, BOB, 5)
        assert ids(hits) == ["d1#0"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)

    def test_acl_update_in_the_same_batch_as_an_upsert_applies_to_the_new_chunks(self, index, rng):
        index.apply(
            WriteBatch(
                upserts=doc_records("d1", ["policy"], STAFF, rng),
                acl_updates={"d1": Acl(allow_users=frozenset({"bob"}))},
            )
        )
        assert ids(index.search_lexical("policy", BOB, 5)) == ["d1#0"]
        assert index.search_lexical("policy", ALICE, 5) == []

    def test_reapplying_a_batch_is_idempotent(self, index, rng):
        batch = WriteBatch(
            upserts=doc_records("d1", ["travel", "hotel"], STAFF, rng)
            + doc_records("d2", ["travel"], STAFF, rng),
            acl_updates={"d2": Acl.public_acl()},
        )
        index.apply(batch)
        first = (index.doc_ids(), dict(index.all_acls()), index.document_chunks("d1"))
        index.apply(batch)
        assert (index.doc_ids(), dict(index.all_acls()), index.document_chunks("d1")) == first
        assert index.stats().chunks == 3

    def test_empty_batch_is_a_no_op(self, index, rng):
        index.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
        index.apply(WriteBatch())
        assert index.doc_ids() == {"d1"}

    @pytest.mark.parametrize(
        "problem", ["no-vector", "wrong-dims", "repeated-id", "id-of-another-doc"]
    )
    def test_invalid_batch_changes_nothing(self, index, rng, problem):
        index.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
        good = record("d2", 0, "travel", STAFF, rng=rng)
        other = record("d3", 0, "x", STAFF, rng=rng)
        bad = {
            "no-vector": dataclasses.replace(other, vector=None),
            "wrong-dims": dataclasses.replace(other, vector=unit(rng, DIM + 1)),
            "repeated-id": good,
            "id-of-another-doc": dataclasses.replace(other, chunk_id="d1#0"),
        }[problem]
        # A delete in the same batch must not happen either (except where deleting d1
        # would make its chunk id free to reuse).
        deletes = set() if problem == "id-of-another-doc" else {"d1"}
        with pytest.raises(InvalidBatchError):
            index.apply(WriteBatch(upserts=[good, bad], delete_docs=deletes))
        assert index.doc_ids() == {"d1"}
        assert ids(index.search_lexical("travel", ALICE, 10)) == ["d1#0"]

    # ------------------------------------------------------------------ generations

    def test_every_commit_names_a_new_generation_of_the_same_index(self, index, rng):
        created = index.index_generation()
        assert created is not None and created.index_id and created.commit
        index.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
        first = index.index_generation()
        index.apply(WriteBatch(acl_updates={"d1": Acl.public_acl()}))
        second = index.index_generation()
        assert first.index_id == second.index_id == created.index_id
        assert created.sequence < first.sequence < second.sequence
        assert len({created.commit, first.commit, second.commit}) == 3

    def test_batches_that_write_nothing_keep_the_generation(self, index, rng):
        index.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
        before = index.index_generation()
        index.apply(WriteBatch())
        with pytest.raises(InvalidBatchError):
            bad = dataclasses.replace(record("d2", 0, "x", STAFF, rng=rng), vector=None)
            index.apply(WriteBatch(upserts=[bad]))
        assert index.index_generation() == before

    def test_document_states_count_live_chunks_with_their_version_and_acl(self, index, rng):
        hr = Acl(allow_groups=frozenset({"hr"}))
        index.apply(
            WriteBatch(
                upserts=[
                    *doc_records("a", ["one", "two", "three"], STAFF, rng),
                    *doc_records("b", ["four"], STAFF, rng, source="wiki"),
                    *doc_records("c", ["five", "six"], STAFF, rng),
                ]
            )
        )
        index.apply(
            WriteBatch(
                upserts=doc_records("a", ["one", "two"], STAFF, rng, version="v2"),
                delete_docs={"c"},
                acl_updates={"b": hr},
            )
        )
        assert index.document_states("handbook") == {
            "a": DocumentState(2, "v2", STAFF.fingerprint())
        }
        assert index.document_states("wiki") == {"b": DocumentState(1, "v1", hr.fingerprint())}
        assert index.document_states("nowhere") == {}
        index.apply(WriteBatch(delete_docs={"a", "b"}))
        assert index.document_states("handbook") == index.document_states("wiki") == {}

    # ------------------------------------------------------------------ ranking contract

    def test_lexical_ranking_contract(self, index, rng):
        index.apply(
            WriteBatch(
                upserts=[
                    record("a", 0, "vpn token reset: reset the vpn token", STAFF, rng=rng),
                    record("b", 0, "the office vpn is slow today and tomorrow", STAFF, rng=rng),
                    record("c", 0, "holiday calendar for the office", STAFF, rng=rng),
                    record("d", 0, "booking hotels for travel", STAFF, rng=rng),
                ]
            )
        )
        hits = index.search_lexical("vpn token", ALICE, 10)
        assert ids(hits) == ["a#0", "b#0"]  # only chunks with a query term, best first
        assert hits[0].score > hits[1].score > 0
        assert ids(index.search_lexical("vpn token", ALICE, 1)) == ["a#0"]
        assert ids(index.search_lexical("Hotel", ALICE, 10)) == ["d#0"]  # stemmed, case-folded
        assert index.search_lexical("the and of", ALICE, 10) == []  # stop words only
        assert index.search_lexical("   ", ALICE, 10) == []

    def test_dense_ranking_contract(self, index, rng):
        self.require_dense()
        records = [record(f"d{i}", 0, "text", STAFF, rng=rng) for i in range(12)]
        index.apply(WriteBatch(upserts=records))
        target = records[5]
        hits = index.search_dense(target.vector, ALICE, 4)
        assert len(hits) == 4 and hits[0].chunk_id == target.chunk_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # cosine similarity
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        exact = sorted(
            ((float(np.dot(r.vector, target.vector)), r.chunk_id) for r in records), reverse=True
        )
        assert ids(hits) == [c for _, c in exact[:4]]
        np.testing.assert_allclose(scores, [s for s, _ in exact[:4]], atol=1e-3)
        with pytest.raises(ValueError):
            index.search_dense(np.zeros(DIM, dtype=np.float32), ALICE, 3)

    def test_hybrid_prefers_chunks_both_retrievers_like(self, index, rng):
        self.require_dense()
        q = unit(rng)
        near = (q + 0.05 * unit(rng)).astype(np.float32)
        records = [
            record("both", 0, "vpn token reset", STAFF, vector=near / np.linalg.norm(near)),
            record("lex", 0, "vpn token", STAFF, rng=rng),
            record("dense", 0, "unrelated words", STAFF, vector=q),
            record("none", 0, "holiday calendar", STAFF, rng=rng),
            record("hidden", 0, "vpn token reset vpn", Acl(allow_users=frozenset({"x"})), vector=q),
        ]
        index.apply(WriteBatch(upserts=records))
        hits = hybrid(index, "vpn token reset", q, ALICE, 3)
        assert hits[0].chunk_id == "both#0"
        assert "hidden#0" not in ids(hybrid(index, "vpn token reset", q, ALICE, 10))


def dataclass_without_acl(r: ChunkRecord) -> tuple:
    return tuple(v for k, v in r.__dict__.items() if k not in ("acl", "vector"))
