"""Permission mapping on recorded-shape payloads: restrictions, space permissions, layers."""

from __future__ import annotations

import logging

import pytest

from connectors.confluence.permissions import SpaceGrant, effective_acl, read_layer, space_grant
from core.acl import AclLayer, Principal
from tests.connectors.confluence.fake import payload

BOB = "557058:f0e1d2c3-aaaa-4bbb-8ccc-000000000001"
CAROL = "712020:0a1b2c3d-hidden-0000-000000000002"


def test_restricted_read_maps_emails_tokens_and_groups(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        layer = read_layer("wiki", payload("restriction_read_restricted.json"), content="98765")
    assert layer is not None
    assert layer.users == {"bob@example.com"}  # visible e-mail, lower-cased
    assert layer.groups == {
        f"wiki:user:{CAROL}",  # hidden e-mail: the account token
        "wiki:group:5a9f3d2e-1111-4c0d-9e8f-abcdefabcdef",  # by id
        "wiki:group:legacy-no-id",  # no id: by name
    }
    # The anonymous entry is not a principal Trove knows: dropped, and said so.
    assert any("unknown user principal" in r.getMessage() for r in caplog.records)


def test_open_read_restriction_is_no_layer() -> None:
    assert read_layer("wiki", payload("restriction_read_open.json")) is None


def test_restriction_with_unexpanded_entries_admits_nobody() -> None:
    data = {"restrictions": {"user": {"size": 2}, "group": {"size": 0}}}
    layer = read_layer("wiki", data, content="1")
    assert layer == AclLayer()
    assert not layer.admits(Principal.of("bob@example.com", ["wiki:group:eng"]))


def test_restriction_of_only_unknown_types_is_an_empty_layer() -> None:
    data = {
        "restrictions": {
            "user": {"results": [{"type": "app-rule", "id": "x"}], "size": 1},
            "group": {"results": [{"type": "team", "id": "t1"}], "size": 1},
        }
    }
    assert read_layer("wiki", data) == AclLayer()


def test_space_permissions_keep_read_space_only(caplog: pytest.LogCaptureFixture) -> None:
    emails = {BOB: "Bob@Example.com"}
    with caplog.at_level(logging.WARNING):
        grant = space_grant(
            "wiki", payload("space_permissions.json")["results"], emails.get, space="ENG"
        )
    assert grant == SpaceGrant(
        users=frozenset({"bob@example.com"}),
        tokens=frozenset({f"wiki:user:{CAROL}", "wiki:group:5a9f3d2e-1111-4c0d-9e8f-abcdefabcdef"}),
        public=False,
    )
    # The administer-only group and the role are not readers.
    assert "wiki:group:99999999-2222-4c0d-9e8f-000000000000" not in grant.tokens
    assert any("'role'" in r.getMessage() for r in caplog.records)


def test_anonymous_access_class_makes_the_space_public() -> None:
    entries = [
        {
            "principal": {"type": "ACCESS_CLASS", "id": "anonymous-users"},
            "operation": {"key": "read", "targetType": "space"},
        }
    ]
    assert space_grant("wiki", entries, lambda _: None).public


def test_layers_are_and_of_ors_for_mixed_users_and_groups() -> None:
    # Page restricted to group A, its parent to bob: only bob, and only while in A.
    grant = SpaceGrant(tokens=frozenset({"wiki:group:all"}))
    acl = effective_acl(
        grant,
        [AclLayer(groups=frozenset({"wiki:group:a"})), AclLayer(users=frozenset({"bob@x.com"}))],
    )
    bob = Principal.of("bob@x.com", ["wiki:group:all", "wiki:group:a"])
    alice = Principal.of("alice@x.com", ["wiki:group:all", "wiki:group:a"])
    bob_outside_a = Principal.of("bob@x.com", ["wiki:group:all"])
    assert acl.permits(bob)
    assert not acl.permits(alice)
    assert not acl.permits(bob_outside_a)


def test_v2_role_principals_anonymous_and_logged_in(caplog: pytest.LogCaptureFixture) -> None:
    """Regression (issue 18, item 3): v2 names anonymous access as a *role*; Trove knew
    only an `anonymous` type, so such spaces were never public. Logged-in-users access
    grants the site token; an unknown role is denied and logged."""
    entries = payload("space_permissions_roles.json")["results"]
    with caplog.at_level(logging.WARNING):
        grant = space_grant("wiki", entries, lambda _: None, site_token="wiki:tenant:acme")
    assert grant.public
    assert grant.tokens == {"wiki:group:5a9f3d2e-1111-4c0d-9e8f-abcdefabcdef", "wiki:tenant:acme"}
    assert any("8f2c-space-role-custom" in r.getMessage() for r in caplog.records)
    # Without a site token (no group sync to grant it), logged-in access grants nothing.
    assert "wiki:tenant:acme" not in space_grant("wiki", entries, lambda _: None).tokens
