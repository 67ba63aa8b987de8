"""SharePoint end to end: a fake Graph tenant on loopback, `trove ingest`, searches as people.

The fake serves Graph's real shapes (delta, permissions, site groups, nested
groups, 302 downloads); the connector, pipeline, real parser, real model,
embedded index and group directory are all the real ones.
"""

from __future__ import annotations

import pytest

from tests.connectors.sharepoint.fake import (
    BOB,
    SECURITY,
    FakeSharePoint,
    make_source_config,
    perm_user,
)
from tests.e2e.connector_harness import SearchAs, write_config
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

ALICE, BOB_UPN, CAROL, ERIN, GUEST = (
    "alice@contoso.com",
    "bob@contoso.com",  # his mail is robert@contoso.com; he signs in with his UPN
    "carol@contoso.com",
    "erin@contoso.com",
    "dave@fabrikam.com",
)
QUERIES = {
    "design": "how does the ingestion service shard documents",
    "api": "search API returns cited passages",
    "handbook": "welcome to Contoso handbook",
    "secret": "salary bands confidential",
}


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sp")
    fake = FakeSharePoint().start()
    ids = fake.seed()
    # The product default: the group sync's permission reads are shared with the
    # ingest that follows (one read per item per run), as in production.
    source = make_source_config(fake, "sp", tmp, shared_permission_reads_s=300)
    config = write_config(tmp, source)
    first = run_ingest(config)["sources"]["sp"]
    search = SearchAs(config)
    yield fake, ids, config, first, search
    search.close()
    fake.stop()


def doc(ids: dict[str, str], name: str) -> str:
    return f"sp:{ids['drive']}:{ids[name]}"


def test_each_person_finds_what_sharepoint_lets_them_read_and_nothing_else(tenant):
    _fake, ids, _config, first, search = tenant
    assert first["added"] == 4 and first["documents_failed"] == []
    expected = {
        # design: site groups (members, owners, visitors = everyone except external + carol)
        # api: alice directly, the Security group (bob, and carol through nested Core)
        # handbook: site groups + an organisation link; secret: bob only
        ALICE: {"design", "api", "handbook"},
        BOB_UPN: {"design", "api", "handbook", "secret"},
        CAROL: {"design", "api", "handbook"},
        ERIN: {"design", "handbook"},
        GUEST: set(),  # a guest: no site group, no organisation link
        "mallory@evil.example": set(),
    }
    for user, names in expected.items():
        allowed = {doc(ids, n) for n in names}
        assert search.readable_docs(user) == allowed, user
        for name, query in QUERIES.items():
            found = search.docs(query, user)
            assert set(found) <= allowed, (user, query, found)  # no leak
            if name in names:
                assert found[0] == doc(ids, name), (user, query, found)


def test_membership_change_applies_at_query_time_without_rewriting_chunks(tenant):
    fake, ids, config, _first, search = tenant
    fake.set_group_members(SECURITY, [BOB])  # Core (carol) leaves Security
    summary = run_ingest(config)["sources"]["sp"]
    assert summary["chunks_written"] == 0 and summary["acl_only"] == 0
    assert doc(ids, "api") not in search.docs(QUERIES["api"], CAROL)
    assert search.docs(QUERIES["api"], BOB_UPN)[0] == doc(ids, "api")


def test_sharing_change_edit_rename_and_delete(tenant):
    fake, ids, config, _first, search = tenant
    fake.set_permissions(
        ids["secret"],
        [perm_user("erin@contoso.com", "e5e5e5e5-0000-4000-8000-000000000005", ["read"])],
    )
    fake.edit_file(ids["design"], "# Design\n\nThe ingestion service now shards by region.\n")
    fake.rename_file(ids["handbook"], "welcome.html")
    fake.delete_file(ids["api"])
    summary = run_ingest(config)["sources"]["sp"]
    assert summary["deleted"] == 1 and summary["documents_failed"] == []
    assert summary["acl_only"] == 1  # the re-shared file: not re-embedded
    assert search.docs(QUERIES["secret"], ERIN)[0] == doc(ids, "secret")
    assert doc(ids, "secret") not in search.docs(QUERIES["secret"], BOB_UPN)
    assert search.docs("shards by region", ALICE)[0] == doc(ids, "design")
    assert doc(ids, "api") not in search.readable_docs(ALICE)
    assert doc(ids, "handbook") in search.readable_docs(ERIN)  # same id after the rename
