"""RetrievalService: the one place permissions, limits, ranking stages and audit meet.
Includes a property test: for random ACLs, principals and queries, nothing unreadable
comes back, from search or from document lookup."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.acl import Acl, Principal
from retrieval.config import RetrievalConfig
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from retrieval.models import SearchFilters
from retrieval.service import (
    AuthenticationError,
    DocumentNotFoundError,
    InvalidRequestError,
    RateLimitedError,
    RateLimiter,
    StageOptions,
    TenantForbiddenError,
    deep_link,
    heading_anchor,
)
from tests.retrieval.api.helpers import (
    build_index,
    make_service,
    records,
    token,
)

ALICE = Principal.of("alice", ["staff"])


@pytest.fixture
def service(tmp_path):
    svc = make_service(tmp_path)
    yield svc
    svc.close()


def test_authenticate_and_tenant(service):
    assert service.authenticate(token("alice", ("staff",))) == ALICE
    with pytest.raises(AuthenticationError, match="missing"):
        service.authenticate(None)
    acme = token("ann", ("staff",), "acme")
    assert service.authenticate(acme, requested_tenant="acme").tenant == "acme"
    with pytest.raises(TenantForbiddenError):
        service.authenticate(acme, requested_tenant="globex")
    with pytest.raises(TenantForbiddenError):
        service.authenticate(token("alice", ("staff",)), requested_tenant="acme")
    # The requested tenant is compared in the token's canonical form, whoever calls.
    assert service.authenticate(acme, requested_tenant=" ACME").tenant == "acme"
    for foreign in ("acme\u200b", "globex", "ac me"):
        with pytest.raises(TenantForbiddenError):
            service.authenticate(acme, requested_tenant=foreign)


def test_no_verifier_refuses_everyone(service):
    service.verifier = None
    with pytest.raises(AuthenticationError, match="not configured"):
        service.authenticate(token())


def test_search_validation(service):
    for query, top_k in [("", 5), ("  ", 5), ("x" * 2001, 5), ("x", 0), ("x", 51), ("a\x00b", 3)]:
        with pytest.raises(InvalidRequestError):
            service.search(ALICE, query, top_k=top_k)


def test_low_confidence_follows_the_best_evidence(service):
    strong = service.search(ALICE, "paid parental leave weeks")
    weak = service.search(ALICE, "volcano eruption lava")
    assert strong.best_evidence > weak.best_evidence
    assert not strong.low_confidence
    assert weak.low_confidence
    none = service.search(Principal.of("nobody", ["outsiders"]), "paid parental leave")
    assert none.results == [] and none.low_confidence and none.best_evidence is None


def test_stages_and_filtered_out_counts(tmp_path):
    service = make_service(
        tmp_path,
        retrieval=RetrievalConfig(fusion="rrf", max_passages_per_document=1, merge_adjacent=False),
    )
    try:
        full = service.search(ALICE, "leave days paid parental sick carry", top_k=10)
        assert [r.doc_id for r in full.results].count("hb:leave.md") == 1
        assert full.filtered_out["per_document_cap"] >= 3
        raw = service.search(
            ALICE,
            "leave days paid parental sick carry",
            top_k=10,
            stages=StageOptions(False, False),
        )
        assert [r.doc_id for r in raw.results].count("hb:leave.md") == 4
        fused = [r.score for r in raw.results]
        assert fused == sorted(fused, reverse=True) and max(fused) < 0.05  # RRF scale
    finally:
        service.close()


def test_new_commits_are_picked_up_within_the_refresh_interval(tmp_path):
    clock = [0.0]
    service = make_service(tmp_path)
    service._clock = lambda: clock[0]
    service._last_refresh = 0.0
    # A second handle on the same directory, as `trove ingest` has.
    writer = EmbeddedIndex.open(tmp_path / "index")
    try:
        travel = next(r for r in records() if r.doc_id == "hb:travel.md")
        new = [
            replace(
                travel,
                doc_id="hb:new.md",
                chunk_id="hb:new.md#0",
                text="Zebra crossings near the office",
            )
        ]
        writer.apply(WriteBatch(upserts=new))
        clock[0] = 0.5
        assert "hb:new.md" not in {
            r.doc_id for r in service.search(ALICE, "zebra crossings").results
        }
        clock[0] = 1.6
        assert "hb:new.md" in {r.doc_id for r in service.search(ALICE, "zebra crossings").results}
        writer.apply(WriteBatch(acl_updates={"hb:new.md": Acl(allow_users=frozenset({"x"}))}))
        clock[0] = 3.0
        assert "hb:new.md" not in {
            r.doc_id for r in service.search(ALICE, "zebra crossings").results
        }
        with pytest.raises(DocumentNotFoundError):
            service.document(ALICE, "hb:new.md")
    finally:
        writer.close()
        service.close()


def test_rate_limiter_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(RateLimitedError) as exc:
        limiter.check("a")
    assert exc.value.retry_after_s == pytest.approx(60.0)
    now[0] = 60.0
    limiter.check("a")


def test_audit_of_documents_and_refusals(service):
    service.document(ALICE, "hb:leave.md", around="hb:leave.md#1")
    with pytest.raises(DocumentNotFoundError):
        service.document(ALICE, "hr:salary.md")
    with pytest.raises(AuthenticationError):
        service.authenticate("garbage")
    lines = [json.loads(x) for x in service.audit.path.read_text().splitlines()]
    assert [(e["event"], e["outcome"]) for e in lines] == [
        ("document", "ok"),
        ("document", "not_found"),
        ("auth", "unauthenticated"),
    ]
    assert lines[0]["chunk_ids"] == ["hb:leave.md#0", "hb:leave.md#1", "hb:leave.md#2"]
    assert lines[1]["principal"] == "alice" and lines[1]["chunk_ids"] == []


def test_deep_links():
    from retrieval.models import Citation

    cite = Citation(
        "d", "t", "file:///a.pdf", "a.pdf", ("Intro", "Per Diem & Hotels!"), (4, 5), 0, 1, "v"
    )
    assert deep_link(cite, "pdf") == "file:///a.pdf#page=4"
    assert deep_link(cite, "md") == "file:///a.pdf#per-diem--hotels"
    assert deep_link(cite, "docx") == "file:///a.pdf"
    assert heading_anchor("Émile's Café 2025") == "émiles-café-2025"


# ----------------------------------------------------------------------------- properties

USERS = ["u0", "u1", "u2", "u3"]
GROUPS = ["g0", "g1", "g2"]
TENANTS = [None, "t0", "t1"]
WORDS = ["leave", "travel", "salary", "badge", "hotel", "audit", "policy", "runbook"]

acls = st.builds(
    Acl,
    allow_users=st.frozensets(st.sampled_from(USERS), max_size=2),
    allow_groups=st.frozensets(st.sampled_from(GROUPS), max_size=2),
    deny_users=st.frozensets(st.sampled_from(USERS), max_size=1),
    deny_groups=st.frozensets(st.sampled_from(GROUPS), max_size=1),
    tenant=st.sampled_from(TENANTS),
    public=st.booleans(),
)
principals = st.builds(
    Principal.of,
    st.sampled_from(USERS),
    st.lists(st.sampled_from(GROUPS), max_size=3),
    st.sampled_from(TENANTS),
)
queries = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
corpora = st.lists(
    st.tuples(
        acls,
        st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


def _corpus(docs) -> dict:
    return {
        f"s:doc{i}.md": (f"doc{i}.md", "md" if i % 2 else "pdf", acl, [" ".join(w) for w in chunks])
        for i, (acl, chunks) in enumerate(docs)
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=corpora,
    who=st.lists(principals, min_size=1, max_size=3),
    query=queries,
    top_k=st.integers(1, 10),
    merge=st.booleans(),
)
def test_no_returned_passage_is_unreadable(docs, who, query, top_k, merge):
    corpus = _corpus(docs)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(tmp) / "index", corpus)
        service = make_service(
            Path(tmp),
            index=index,
            retrieval=RetrievalConfig(merge_adjacent=merge),
            audit_log=None,
        )
        try:
            acl_of = {r.chunk_id: r.acl for r in records(corpus)}
            for principal in who:
                outcome = service.search(principal, query, top_k=top_k)
                for result in outcome.results:
                    for chunk_id in result.chunk_ids:
                        assert acl_of[chunk_id].permits(principal), (principal, chunk_id)
                readable_docs = {
                    doc_id for doc_id, (_, _, acl, _) in corpus.items() if acl.permits(principal)
                }
                for doc_id in corpus:
                    try:
                        view = service.document(principal, doc_id, around=f"{doc_id}#0")
                    except DocumentNotFoundError:
                        assert doc_id not in readable_docs
                        continue
                    assert doc_id in readable_docs
                    assert all(acl_of[c.chunk_id].permits(principal) for c in view.context)
        finally:
            service.close()


@settings(max_examples=25, deadline=None)
@given(
    principal=principals,
    query=queries,
    sources=st.none() | st.frozensets(st.sampled_from(["s", "other"]), min_size=1),
)
def test_filters_only_narrow(principal, query, sources, tmp_path_factory):
    service = _shared_service(tmp_path_factory)
    unfiltered = {
        c for r in service.search(principal, query, top_k=50).results for c in r.chunk_ids
    }
    filtered = service.search(principal, query, top_k=50, filters=SearchFilters(sources=sources))
    got = {c for r in filtered.results for c in r.chunk_ids}
    # The corpus is smaller than top_k, so the unfiltered search returns every match.
    assert got <= unfiltered
    for r in filtered.results:
        assert sources is None or r.source in sources
        assert all(_SHARED["acl"][c].permits(principal) for c in r.chunk_ids)


_SHARED: dict = {}


def _shared_service(factory):
    if "svc" not in _SHARED:
        docs = [
            (Acl(allow_groups=frozenset({g})), [[w, WORDS[(i + 1) % 8]]])
            for i, (g, w) in enumerate(zip(GROUPS * 3, WORDS, strict=False))
        ]
        tmp = factory.mktemp("shared")
        _SHARED["acl"] = {r.chunk_id: r.acl for r in records(_corpus(docs))}
        _SHARED["svc"] = make_service(
            tmp, index=build_index(tmp / "index", _corpus(docs)), audit_log=None
        )
    return _SHARED["svc"]


def test_search_and_document_lookup_expand_the_caller_through_the_group_directory(tmp_path):
    from connectors.base import GroupSnapshot
    from retrieval.directory import GroupDirectory

    directory = GroupDirectory.in_state_dir(tmp_path / "state")
    svc = make_service(tmp_path, identity=directory)
    dana = Principal.of("Dana@Example.com")  # no groups in her token
    try:
        with pytest.raises(DocumentNotFoundError):
            svc.document(dana, "hb:leave.md")
        directory.replace_source(GroupSnapshot("idp", {"staff": frozenset({"dana@example.com"})}))
        assert svc.document(dana, "hb:leave.md").chunk_count == 4
        found = svc.search(dana, "annual leave days", top_k=5).results
        assert found and all(r.doc_id.startswith("hb:") for r in found)
    finally:
        svc.close()


def test_start_up_warms_the_index_unless_told_not_to(tmp_path, monkeypatch):
    """build_retrieval_service readies the index's first dense search (its int8 kernel), as it
    readies the query model, so a server's first request does not pay for either."""
    from tests.retrieval.api.helpers import make_settings
    from trove.wiring import build_retrieval_service

    build_index(tmp_path / "index").close()
    warmed = []
    monkeypatch.setattr(EmbeddedIndex, "warm_up", lambda self: warmed.append(self.root))
    for warm_up, expected in ((False, []), (True, [tmp_path / "index"])):
        service = build_retrieval_service(make_settings(tmp_path), warm_up=warm_up)
        try:
            assert [Path(p).resolve() for p in warmed] == [p.resolve() for p in expected]
        finally:
            service.close()
