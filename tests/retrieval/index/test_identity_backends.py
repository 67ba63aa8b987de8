"""Both index backends filter in the canonical identity form, old indexes included (issue 16).

Every spelling of a user or group (case, width, normalisation, padding) reads
exactly what its canonical form reads, through the embedded index's ACL table
and through the OpenSearch query run on a real node; an index written before
the canonical form (a deny on ``Mallory``) keeps its deny.
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.acl import Acl, AclLayer, Principal
from core.identity import canonical_user
from retrieval.index.base import IndexBackend, WriteBatch
from retrieval.index.config import IndexConfig
from retrieval.index.embedded import EmbeddedIndex
from retrieval.index.opensearch import queries as q
from retrieval.index.opensearch.documents import ACL_IDENTITY_FORM_FIELD, to_source
from retrieval.index.opensearch.index import OpenSearchIndex
from tests.retrieval.builders import DIM, record
from tests.trove.spellings import full_width, spellings

USERS = ["mallory", "Ünal.Öztürk@Corp.Example", "straße@büro.de", "o.brien-smith@corp.example"]
GROUPS = ["Contractors", "wiki:group:Ärzte", "sp:group:ABCDEF01", "Finance-Team"]
DENIES = ("deny", "deny-canonical", "deny-group")
ALLOWS = ("allow", "allow-group", "layer")


def corpus_acls() -> dict[str, Acl]:
    """Per identity i: ACLs that deny it and ACLs that admit only it, each spelled differently."""
    acls: dict[str, Acl] = {}
    for i, (user, group) in enumerate(zip(USERS, GROUPS, strict=True)):
        acls[f"deny-{i}"] = Acl(public=True, deny_users=frozenset({user.upper() + "\t"}))
        acls[f"deny-canonical-{i}"] = Acl(public=True, deny_users=frozenset({canonical_user(user)}))
        acls[f"deny-group-{i}"] = Acl(public=True, deny_groups=frozenset({full_width(group)}))
        acls[f"allow-{i}"] = Acl(allow_users=frozenset({"\u00a0" + full_width(user)}))
        acls[f"allow-group-{i}"] = Acl(allow_groups=frozenset({group.swapcase() + "\u3000"}))
        nfd = unicodedata.normalize("NFD", user.title())
        acls[f"layer-{i}"] = Acl(public=True, layers=(AclLayer(users=frozenset({nfd})),))
    return acls


def expected_for(i: int) -> set[str]:
    others = [j for j in range(len(USERS)) if j != i]
    return {f"{kind}-{j}" for kind in DENIES for j in others} | {f"{kind}-{i}" for kind in ALLOWS}


def load(index: IndexBackend) -> None:
    rng = np.random.default_rng(7)
    records = [record(doc, 0, "handbook page", acl, rng=rng) for doc, acl in corpus_acls().items()]
    index.apply(WriteBatch(upserts=records))


def readable(index: IndexBackend, principal: Principal) -> set[str]:
    return {h.chunk_id.split("#")[0] for h in index.search_lexical("handbook", principal, 100)}


def check_every_spelling(index: IndexBackend, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True)
    @given(i=st.integers(0, len(USERS) - 1), data=st.data())
    def check(i: int, data: st.DataObject) -> None:
        principal = Principal.of(data.draw(spellings(USERS[i])), [data.draw(spellings(GROUPS[i]))])
        assert readable(index, principal) == expected_for(i)

    check()


@pytest.fixture
def embedded(tmp_path):
    ix = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
    yield ix
    ix.close()


def os_config(url: str, prefix: str) -> IndexConfig:
    return IndexConfig(backend="opensearch", hosts=[url], index_prefix=prefix, number_of_replicas=0)


@pytest.fixture
def opensearch(opensearch_prefix):
    ix = OpenSearchIndex.open(os_config(*opensearch_prefix), create=True, dimensions=DIM)
    yield ix
    ix.close()


def test_every_spelling_reads_what_its_canonical_form_reads_in_the_embedded_index(embedded):
    load(embedded)
    check_every_spelling(embedded, examples=60)
    # The dense retriever goes through the same ACL table.
    rng = np.random.default_rng(1)
    hits = embedded.search_dense(
        rng.normal(size=DIM).astype(np.float32), Principal.of("MALLORY"), 100
    )
    assert not {h.chunk_id.split("#")[0] for h in hits} & {"deny-0", "deny-canonical-0"}


@pytest.mark.opensearch
def test_every_spelling_reads_what_its_canonical_form_reads_in_opensearch(opensearch):
    load(opensearch)
    check_every_spelling(opensearch, examples=40)
    stored = opensearch.client.get(index=opensearch.alias, id="deny-0#0")["_source"]
    assert stored["acl_deny_users"] == ["mallory"] and stored[ACL_IDENTITY_FORM_FIELD] == 1


# ---------------------------------------------------------------- indexes written before


def test_an_embedded_index_written_with_other_spellings_keeps_its_deny(embedded, tmp_path):
    rng = np.random.default_rng(2)
    acl = Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"}))
    embedded.apply(WriteBatch(upserts=[record("pay", 0, "salary handbook", acl, rng=rng)]))
    embedded.close()
    # What the previous release wrote for `deny_users: [Mallory]`, `allow_groups: [HR]`.
    tables = list((tmp_path / "index").rglob("acl.json"))
    assert tables
    for table in tables:
        stored = json.loads(table.read_text())
        for entry in stored:
            entry["deny_users"], entry["allow_groups"] = ["Mallory"], ["HR"]
        table.write_text(json.dumps(stored))
    reopened = EmbeddedIndex.open(tmp_path / "index")
    try:
        for spelling in ("mallory", "Mallory", "MALLORY ", "ｍａｌｌｏｒｙ"):
            assert readable(reopened, Principal.of(spelling, ["hr"])) == set()
        assert readable(reopened, Principal.of("alice", ["Hr"])) == {"pay"}
        assert reopened.all_acls()["pay#0"] == acl
    finally:
        reopened.close()


@pytest.mark.opensearch
def test_an_opensearch_chunk_indexed_before_the_canonical_form_is_withheld_if_it_denies(
    opensearch,
):
    rng = np.random.default_rng(3)
    legacy = {
        "deny": Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"})),
        "allow": Acl(allow_groups=frozenset({"hr"})),
    }
    for doc, acl in legacy.items():
        source = to_source(record(doc, 0, "salary handbook", acl, rng=rng))
        del source[ACL_IDENTITY_FORM_FIELD]  # written by the previous release
        if doc == "deny":
            source["acl_deny_users"] = ["Mallory"]  # the spelling `terms` no longer matches
        opensearch.client.index(index=opensearch.alias, id=f"{doc}#0", body=source, refresh=True)
    # Withheld from everyone until rewritten; a legacy chunk without a deny is as before.
    assert readable(opensearch, Principal.of("Mallory", ["hr"])) == {"allow"}
    assert readable(opensearch, Principal.of("alice", ["hr"])) == {"allow"}
    # The next ingest sees a changed fingerprint and rewrites the ACL (ACL-only).
    opensearch.apply(WriteBatch(acl_updates={"deny": legacy["deny"]}))
    assert readable(opensearch, Principal.of("Mallory", ["hr"])) == {"allow"}
    assert readable(opensearch, Principal.of("alice", ["hr"])) == {"allow", "deny"}


@pytest.mark.opensearch
def test_opening_an_index_created_before_the_canonical_form_maps_the_new_field(
    opensearch_prefix,
):
    from opensearchpy import OpenSearch

    url, prefix = opensearch_prefix
    client = OpenSearch(hosts=[url])
    body = q.index_body(DIM, replicas=0)
    del body["mappings"]["properties"][ACL_IDENTITY_FORM_FIELD]
    versioned = f"{prefix}-chunks-v0001"
    client.indices.create(index=versioned, body=body)
    client.indices.update_aliases(body=q.alias_swap_actions(f"{prefix}-chunks", None, versioned))
    ix = OpenSearchIndex.open(os_config(url, prefix))
    try:
        mapping = client.indices.get_mapping(index=versioned)
        props = mapping[versioned]["mappings"]["properties"]
        assert props[ACL_IDENTITY_FORM_FIELD] == {"type": "integer"}
        acl = Acl(public=True, deny_users=frozenset({"Mallory"}))
        ix.apply(WriteBatch(upserts=[record("d", 0, "handbook", acl)]))  # strict mapping: accepted
        assert readable(ix, Principal.of("bob")) == {"d"}
        assert readable(ix, Principal.of("MALLORY")) == set()
    finally:
        ix.close()
        client.close()


def test_the_legacy_clause_shape():
    assert q.legacy_deny_clause() == {
        "bool": {
            "must_not": [{"range": {"acl_identity_form": {"gte": 1}}}],
            "should": [
                {"exists": {"field": "acl_deny_users"}},
                {"exists": {"field": "acl_deny_groups"}},
            ],
            "minimum_should_match": 1,
        }
    }
