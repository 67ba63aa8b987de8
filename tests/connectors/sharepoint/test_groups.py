"""Group sync: Entra groups (nested), M365 owners, site groups via SharePoint REST, users."""

from __future__ import annotations

from connectors.base import GroupSource
from tests.connectors.sharepoint.fake import (
    ALICE,
    BOB,
    CAROL,
    CORE,
    ENGINEERING,
    ERIN,
    SECURITY,
    TENANT_ID,
    payload,
    perm_group,
)

TENANT = f"sp:tenant:{TENANT_ID}"


def user(uid: str) -> str:
    return f"sp:user:{uid}"


def site_group(fake, n: int) -> str:
    return f"sp:sitegroup:{fake.sites['eng'].collection_id}:{n}"


def test_sync_groups_expands_every_group_the_permissions_name(fake, connector):
    assert isinstance(connector, GroupSource)

    snapshot = connector.sync_groups()

    assert snapshot.source == "sp" and snapshot.tenant_token == TENANT
    members = snapshot.members
    assert set(members) == {
        f"sp:group:{SECURITY}",  # granted on api.txt
        site_group(fake, 3),
        site_group(fake, 4),
        site_group(fake, 5),
    }
    # Nesting flattened: carol is in Core, which is in Security.
    assert members[f"sp:group:{SECURITY}"] == {
        user(BOB),
        "bob@contoso.com",
        "robert@contoso.com",
        user(CAROL),
        "carol@contoso.com",
    }
    # Owners (3) holds the M365 group's owners ({guid}_o), Members (5) its members.
    assert members[site_group(fake, 3)] == {user(ALICE), "alice@contoso.com"}
    assert members[site_group(fake, 5)] == {
        user(ALICE),
        "alice@contoso.com",
        user(BOB),
        "bob@contoso.com",
        "robert@contoso.com",
    }
    # Visitors (4): "Everyone except external users" is the tenant token; carol by login.
    assert members[site_group(fake, 4)] == {TENANT, "carol@contoso.com", user(CAROL)}
    # Directory users: identities lower-cased; the guest gets no tenant-wide access.
    users = {u.token: u.identities for u in snapshot.users}
    assert users[user(BOB)] == {"bob@contoso.com", "robert@contoso.com"}
    assert set(users) == {user(ALICE), user(BOB), user(CAROL), user(ERIN)}

    # Requests: paged transitiveMembers with $select, owners, users, site-group REST.
    transitive = fake.requests_to(rf"^/v1\.0/groups/{SECURITY}/transitiveMembers$")
    assert [r.query.get("$select") for r in transitive] == ["id,mail,userPrincipalName"] * 2
    assert "$skiptoken" in transitive[1].query
    assert len(fake.requests_to(rf"^/v1\.0/groups/{ENGINEERING}/owners$")) == 1
    assert len(fake.requests_to(r"^/v1\.0/users$")) == 3  # five users, two per page
    rest = fake.requests_to(r"/_api/web/sitegroups/getbyid\(\d\)/users$")
    assert sorted(r.path.split("(")[1][0] for r in rest) == ["3", "4", "5"]
    assert all(r.host == "localhost" for r in rest)
    # SharePoint REST got a token for the SharePoint resource, not Graph's.
    scopes = [r.body.decode() for r in fake.requests_to(r"/oauth2/v2\.0/token$")]
    assert any("localhost" in s for s in scopes) and any("127.0.0.1" in s for s in scopes)


def test_group_membership_changes_are_reflected_by_the_next_sync(fake, connector):
    before = connector.sync_groups().members[f"sp:group:{SECURITY}"]
    assert user(BOB) in before
    fake.set_group_members(SECURITY, [ERIN])
    fake.set_group_owners(ENGINEERING, [CAROL])
    walks = len(fake.requests_to(r"/root/delta$"))

    after = connector.sync_groups().members

    assert after[f"sp:group:{SECURITY}"] == {user(ERIN), "erin@contoso.com"}
    assert after[site_group(fake, 3)] == {user(CAROL), "carol@contoso.com"}
    # The walk that found the groups is not repeated on the same connector.
    assert len(fake.requests_to(r"/root/delta$")) == walks


def test_site_group_login_names_map_to_members(fake, connector):
    fake.set_site_group("eng", 4, payload("sitegroup_users.json")["value"])

    members = connector.sync_groups().members[site_group(fake, 4)]

    assert members == {
        "carol@contoso.com",
        user(CAROL),  # i:0#.f|membership| user, Email lower-cased
        user(ALICE),
        "alice@contoso.com",  # federated M365 group: its (transitive) members
        user(BOB),
        "bob@contoso.com",
        "robert@contoso.com",  # ... and Security's
        TENANT,  # Everyone except external users
    }  # SHAREPOINT\system is ignored


def test_configured_and_deleted_groups(fake, make_connector):
    fake.set_permissions(fake.ids["api"], [perm_group("99999999-dead-4ead-8ead-999999999999")])
    connector = make_connector(groups=[CORE.upper()], site_groups=False)

    snapshot = connector.sync_groups()

    assert snapshot.members[f"sp:group:{CORE}"] == {user(CAROL), "carol@contoso.com"}
    assert snapshot.members["sp:group:99999999-dead-4ead-8ead-999999999999"] == frozenset()
    assert not any(k.startswith("sp:sitegroup:") for k in snapshot.members)
    assert not fake.requests_to(r"/_api/")


def test_a_run_reads_each_items_permissions_once(fake, make_connector):
    """Regression (issue 18, item 7): the group sync walked every item's permissions and
    the ingest that follows read them all again (listing, downloads, re-sync)."""
    permissions = r"^/v1\.0/drives/[^/]+/items/[^/]+/permissions$"
    groups = make_connector(shared_permission_reads_s=300)
    groups.sync_groups()  # its own step, as `trove ingest` runs it first
    assert len(fake.requests_to(permissions)) == 4
    ingest = make_connector(shared_permission_reads_s=300)  # a fresh connector, same run
    documents = [d for b in ingest.changes(None) for d in b.documents]
    fetched = [ingest.fetch(d.doc_id) for d in documents]
    stamps = list(ingest.list_ids())
    assert len(documents) == len(fetched) == len(stamps) == 4
    assert len(fake.requests_to(permissions)) == 4  # one read per item in the whole run
    assert fetched[0].acl == documents[0].acl

    # The next group sync reads afresh, so a sharing change is never held back by it.
    fake.set_permissions(fake.ids["design"], [perm_group(CORE, ["read"])])
    make_connector(shared_permission_reads_s=300).sync_groups()
    assert len(fake.requests_to(permissions)) == 8
    later = {s.doc_id: s for s in make_connector(shared_permission_reads_s=300).list_ids()}
    design = next(s for s in later.values() if s.path.endswith("design.md"))
    assert design.acl.allow_groups == {f"sp:group:{CORE}"}
    assert len(fake.requests_to(permissions)) == 8
