"""Permission mapping (every grant kind, the three link scopes) and ACL re-sync via list_ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.sharepoint.connector import document_id
from connectors.sharepoint.permissions import (
    PermissionContext,
    map_permissions,
    parse_login_name,
)
from core.acl import Acl, Principal
from tests.connectors.sharepoint.fake import (
    ENGINEERING,
    SECURITY,
    TENANT_ID,
    payload,
    perm_group,
    perm_link,
    perm_user,
)

SITE = "913304b6-af63-48c2-8c24-6b8aeef678e9"
TENANT = f"sp:tenant:{TENANT_ID}"


def context(**kw) -> PermissionContext:
    base = dict(
        source="sp",
        tenant_id=TENANT_ID,
        site_id=SITE,
        site_url="https://contoso.sharepoint.com/sites/eng",
    )
    return PermissionContext(**{**base, **kw})


def test_every_permission_kind_maps_to_principals():
    perms = payload("permissions_all_kinds.json")["value"]

    acl, refs = map_permissions(perms, context())

    assert acl.allow_users == {
        "alice@contoso.com",  # user with email (lower-cased), and its siteUser login
        "grace@contoso.com",  # siteUser known only by its membership login
        "heidi@contoso.com",  # a `users` link's grantee
        "ivan@fabrikam.com",  # a `users` link's guest grantee (email)
        "ivan_fabrikam.com#ext#@contoso.onmicrosoft.com",
    }
    assert acl.allow_groups == {
        "sp:user:a1a1a1a1-0000-4000-8000-000000000001",  # alice's Entra id, too
        "sp:user:f6f6f6f6-0000-4000-8000-000000000006",  # no e-mail: the id token only
        "sp:user:a8a8a8a8-0000-4000-8000-000000000008",  # heidi (users link)
        f"sp:group:{SECURITY}",  # Entra group (id lower-cased) and its tenant claim
        f"sp:sitegroup:{SITE}:3",  # site group, scoped by site collection
        f"sp:group:{ENGINEERING}_o",  # `{guid}_o`: the M365 group's owners
        f"sp:group:{ENGINEERING}",  # federated M365 group login
        TENANT,  # Everyone except external users (inheritedFrom with a path) + org link
    }
    assert not acl.public  # anonymous links are ignored by default
    # existingAccess grants nothing; applications and roles without read are ignored.
    assert "mallory@contoso.com" not in acl.allow_users
    assert "oscar@contoso.com" not in acl.allow_users
    assert not any("44444444" in g or "a9a9a9a9" in g or "a0a0a0a0" in g for g in acl.allow_groups)
    assert acl.deny_users == set() and acl.deny_groups == set() and acl.layers == ()
    # What group sync must expand:
    assert refs.groups == {SECURITY, ENGINEERING}
    assert refs.owners == {ENGINEERING}
    assert refs.site_groups == {(SITE, "3"): "https://contoso.sharepoint.com/sites/eng"}


HEIDI = {"user": {"id": "h1", "email": "heidi@contoso.com"}}


@pytest.mark.parametrize(
    ("anonymous", "organization", "public", "tenant", "redeemers"),
    [
        ("redeemers", "redeemers", False, False, True),  # the default
        ("public", "redeemers", True, False, True),
        ("redeemers", "tenant", False, True, True),
        ("ignore", "ignore", False, False, False),
    ],
)
def test_link_scope_policies(anonymous, organization, public, tenant, redeemers):
    perms = [perm_link("anonymous", grantees=[HEIDI]), perm_link("organization", grantees=[HEIDI])]

    acl, _ = map_permissions(
        perms, context(anonymous_links=anonymous, organization_links=organization)
    )

    assert acl.public is public
    assert (TENANT in acl.allow_groups) is tenant
    assert ("heidi@contoso.com" in acl.allow_users) is redeemers
    if not (public or tenant or redeemers):
        assert acl == Acl.empty()


def test_sharing_links_grant_only_their_redeemers_by_default_and_expire():
    """Regression (issue 18, item 2): an organization link made a file readable by the
    whole tenant by default. Microsoft: such links (and Anyone links) need redeeming,
    and the redeemers are the link's grantedToIdentitiesV2. Expired links grant nothing."""
    perms = payload("permissions_sharing_links.json")["value"]
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

    acl, _ = map_permissions(perms, context(now=now))

    assert acl.allow_users == {"heidi@contoso.com", "ivy@contoso.com"}
    assert acl.allow_groups == {
        "sp:user:a8a8a8a8-0000-4000-8000-000000000008",
        "sp:user:a7a7a7a7-0000-4000-8000-000000000007",
    }
    assert TENANT not in acl.allow_groups and not acl.public
    assert "judy@contoso.com" not in acl.allow_users  # her link expired on 2026-01-31
    assert not acl.permits(Principal.of("mallory@contoso.com", [TENANT]))
    # Before the expiry Judy's redemption counted; MinValue (year 1) never expires.
    earlier, _ = map_permissions(perms, context(now=datetime(2026, 1, 1, tzinfo=UTC)))
    assert "judy@contoso.com" in earlier.allow_users
    # The widening is an explicit opt-in.
    widened, _ = map_permissions(
        perms, context(now=now, organization_links="tenant", anonymous_links="public")
    )
    assert TENANT in widened.allow_groups and widened.public


def test_users_link_grants_only_its_grantees_and_existing_access_nothing():
    heidi = HEIDI
    acl, _ = map_permissions(
        [perm_link("users", ["write"], [heidi]), perm_link("existingAccess", ["read"], [heidi])],
        context(),
    )
    assert acl.allow_users == {"heidi@contoso.com"} and acl.allow_groups == {"sp:user:h1"}
    acl, _ = map_permissions([perm_link("existingAccess", ["read"], [heidi])], context())
    assert acl == Acl.empty()


@pytest.mark.parametrize("role", ["read", "write", "owner"])
def test_read_write_and_owner_all_grant_read(role):
    acl, _ = map_permissions([perm_group(SECURITY, [role])], context())
    assert acl.permits(Principal.of("x@contoso.com", [f"sp:group:{SECURITY}"]))


def test_site_group_without_a_site_grants_nothing():
    perms = payload("permissions_all_kinds.json")["value"]
    site_group = [p for p in perms if "siteGroup" in (p.get("grantedToV2") or {})]
    acl, refs = map_permissions(site_group, context(site_id=None, site_url=None))
    assert acl == Acl.empty() and not refs.site_groups


def test_login_names_are_classified():
    assert parse_login_name("i:0#.f|membership|Bob@Contoso.com").value == "bob@contoso.com"
    assert parse_login_name(f"c:0o.c|federateddirectoryclaimprovider|{ENGINEERING}_o").kind == (
        "owners"
    )
    assert parse_login_name(f"c:0t.c|tenant|{SECURITY}").kind == "group"
    assert parse_login_name("c:0(.s|true").kind == "tenant"
    assert parse_login_name("SHAREPOINT\\system").kind == "unknown"


def test_documents_carry_mapped_acls_and_unmappable_ones_are_empty(fake, make_connector):
    fake.set_permissions(
        fake.ids["handbook"],
        [
            perm_link("existingAccess"),
            {"id": "x", "roles": ["read"], "grantedToV2": {"application": {"id": "app"}}},
        ],
    )
    docs = {d.doc_id: d for b in make_connector().changes(None) for d in b.documents}
    drive = fake.ids["drive"]

    handbook = docs[document_id("sp", drive, fake.ids["handbook"])]
    assert handbook.acl == Acl.empty() and not handbook.acl.grants_anyone  # fail closed
    secret = docs[document_id("sp", drive, fake.ids["secret"])]
    assert secret.acl.permits(Principal.of("robert@contoso.com"))
    assert not secret.acl.permits(Principal.of("alice@contoso.com"))


def test_list_ids_reports_current_acls_after_a_permission_change(fake, make_connector):
    connector = make_connector()
    cursor = list(connector.changes(None))[-1].cursor
    doc_id = document_id("sp", fake.ids["drive"], fake.ids["design"])
    fake.set_permissions(fake.ids["design"], [perm_user("erin@contoso.com", "e5", ["read"])])

    # Delta does not report sharing changes...
    assert not any(b.documents for b in connector.changes(cursor))
    # ...the slim listing does, with versions and paths, for every file.
    stamps = {s.doc_id: s for s in connector.list_ids()}
    assert len(stamps) == 4
    assert stamps[doc_id].acl.allow_users == {"erin@contoso.com"}
    assert stamps[doc_id].acl.allow_groups == {"sp:user:e5"}
    assert stamps[doc_id].path == "Documents/Specs/design.md"
    assert stamps[doc_id].version == f'"{{{fake.items[fake.ids["design"]].guid.upper()}}},1"'


@pytest.mark.parametrize(("status", "reason"), [(404, "not found"), (500, "status 500")])
def test_a_permission_read_failure_is_a_document_failure(fake, make_connector, status, reason):
    drive, item = fake.ids["drive"], fake.ids["api"]
    path = f"/v1.0/drives/{drive}/items/{item}/permissions"
    fake.queue_response("GET", path, status, {"error": {"code": "x", "message": "y"}}, times=20)

    batches = list(make_connector().changes(None))

    failures = [f for b in batches for f in b.failures]
    assert [(f.doc_id, f.path) for f in failures] == [
        (document_id("sp", drive, item), "Documents/Specs/api.txt")
    ]
    assert reason in failures[0].reason
    assert len([d for b in batches for d in b.documents]) == 3  # the others still go through
    attempts = len(fake.requests_to(f"^{path}$", inner=True))
    assert attempts == (1 if status == 404 else 4)  # bounded retries for server errors only
    # In the slim listing the item stays, with an empty (fail-closed) ACL.
    stamps = {s.doc_id: s for s in make_connector().list_ids()}
    assert stamps[document_id("sp", drive, item)].acl == Acl.empty()


def test_an_organization_link_does_not_open_a_file_to_the_tenant(fake, make_connector):
    """Through the connector: the seeded handbook carries an unredeemed organization link;
    its ACL holds the site groups it already had, never the tenant token."""
    docs = {d.doc_id: d for b in make_connector().changes(None) for d in b.documents}
    handbook = docs[document_id("sp", fake.ids["drive"], fake.ids["handbook"])]
    assert TENANT not in handbook.acl.allow_groups
    widened = make_connector("sp2", organization_links="tenant")
    docs = {d.doc_id: d for b in widened.changes(None) for d in b.documents}
    assert (
        TENANT.replace("sp:", "sp2:")
        in docs[document_id("sp2", fake.ids["drive"], fake.ids["handbook"])].acl.allow_groups
    )
