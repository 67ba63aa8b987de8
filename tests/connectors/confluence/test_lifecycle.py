"""Deletions, renames, fetch, groups and effective ACLs through the fake."""

from __future__ import annotations

import json
import logging
from collections import Counter

import httpx
import pytest

from connectors.base import DocumentStamp
from connectors.confluence.client import DocumentNotFound
from connectors.principals import group_token
from core.acl import Acl
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import FakeConfluence, principal_for


def _stamps(connector) -> dict[str, DocumentStamp]:
    return {s.doc_id: s for s in connector.list_ids()}


def test_list_ids_matches_what_changes_emits(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    docs = {d.doc_id: d for b in connector.changes(None) for d in b.documents}
    stamps = _stamps(connector)
    assert set(stamps) == set(docs)
    for doc_id, stamp in stamps.items():
        assert (stamp.version, stamp.acl, stamp.path) == (
            docs[doc_id].version,
            docs[doc_id].acl,
            docs[doc_id].path,
        )
    # The slim listing never asks for bodies or downloads.
    listing = [c for c in fake.calls if c.path.endswith("/pages") and "/spaces/" in c.path]
    assert listing[-1].arg("body-format") is None


def test_trashed_page_drops_out_and_children_move_up(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    fake.trash_page(site.handbook)
    stamps = _stamps(connector)
    assert f"wiki:page:{site.handbook}" not in stamps
    assert stamps[f"wiki:page:{site.onboarding}"].path == "ENG/Home/Onboarding"
    assert stamps[f"wiki:att:{site.guide_pdf}"].path == "ENG/Home/Onboarding/guide.pdf"
    # CQL never reports the trashed page.
    assert all(
        d.doc_id != f"wiki:page:{site.handbook}"
        for b in connector.changes(cursor)
        for d in b.documents
    )

    fake.trash_page(site.home, with_children=True)
    stamps = _stamps(connector)
    assert not [s for s in stamps if s.split(":")[-1] in (site.home, site.onboarding)]
    assert f"wiki:att:{site.guide_pdf}" not in stamps
    assert f"wiki:page:{site.runbook}" in stamps


def test_purged_page_is_gone_everywhere(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    fake.purge_page(site.runbook)
    with pytest.raises(DocumentNotFound):
        connector.fetch(f"wiki:page:{site.runbook}")
    with pytest.raises(DocumentNotFound):
        connector.fetch(f"wiki:att:{site.notes_txt}")
    stamps = _stamps(connector)
    assert f"wiki:page:{site.runbook}" not in stamps
    assert f"wiki:att:{site.notes_txt}" not in stamps


def test_page_purged_while_listed_is_reported_deleted(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    ghost = fake.add_page("OPS", "Ghost", "<p>boo</p>")
    fake.purge_page(ghost, linger=True)  # the listing still shows it; reads of it 404
    connector = connector_for()
    batches = list(connector.changes(None))
    deleted = [d for b in batches for d in b.deleted]
    assert deleted == [f"wiki:page:{ghost}"]
    assert all(d.doc_id != f"wiki:page:{ghost}" for b in batches for d in b.documents)
    assert f"wiki:page:{ghost}" not in _stamps(connector)


def test_purged_page_still_in_search_is_reported_deleted(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    fake.edit_page(site.runbook, "<p>last words</p>")
    fake.edit_attachment(site.notes_txt, b"notes v2")
    fake.purge_page(site.runbook, linger=True)  # search still lists page and attachment
    batches = list(connector.changes(cursor))
    deleted = {d for b in batches for d in b.deleted}
    assert deleted == {f"wiki:att:{site.notes_txt}", f"wiki:page:{site.runbook}"}
    assert not [d for b in batches for d in b.documents]


def test_rename_keeps_the_id_and_changes_paths(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    fake.rename_page(site.handbook, "Guidebook")
    docs = {d.doc_id: d for b in connector.changes(cursor) for d in b.documents}
    assert list(docs) == [f"wiki:page:{site.handbook}"]
    renamed = docs[f"wiki:page:{site.handbook}"]
    assert (renamed.title, renamed.path, renamed.version) == (
        "Guidebook",
        "ENG/Home/Guidebook",
        "2",
    )
    assert b"<title>Guidebook</title>" in (renamed.content or b"")
    # Descendants keep their version; only the slim listing shows their new path.
    stamps = _stamps(connector)
    child = stamps[f"wiki:page:{site.onboarding}"]
    assert (child.path, child.version) == ("ENG/Home/Guidebook/Onboarding", "1")

    fake.move_page(site.onboarding, site.home)
    assert _stamps(connector)[f"wiki:page:{site.onboarding}"].path == "ENG/Home/Onboarding"


def test_fetch_returns_bytes_and_refuses_foreign_ids(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    docs = {d.doc_id: d for b in connector.changes(None) for d in b.documents}
    page = connector.fetch(f"wiki:page:{site.onboarding}")
    assert page == docs[f"wiki:page:{site.onboarding}"]
    attachment = connector.fetch(f"wiki:att:{site.guide_pdf}")
    assert attachment == docs[f"wiki:att:{site.guide_pdf}"]
    fresh = connector_for()  # fetch works without a prior run too
    assert fresh.fetch(f"wiki:att:{site.notes_txt}").content == b"on-call notes"
    scratch = next(c.id for c in fake.contents.values() if c.space_key == "SANDBOX")
    for bad in (
        "other:page:1",
        "wiki:blog:1",
        f"wiki:page:{scratch}",
        f"wiki:att:{site.drawing_vsdx}",
    ):
        with pytest.raises(DocumentNotFound):
            connector.fetch(bad)


def test_page_and_ancestor_restrictions_change_list_ids_acls(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    before = _stamps(connector)
    fake.restrict_page(site.onboarding, users=["u-bob"])
    after_page = _stamps(connector)
    onboarding = after_page[f"wiki:page:{site.onboarding}"].acl
    assert onboarding.fingerprint() != before[f"wiki:page:{site.onboarding}"].acl.fingerprint()
    assert [layer.users for layer in onboarding.layers] == [{"bob@example.com"}]
    assert after_page[f"wiki:att:{site.guide_pdf}"].acl == onboarding  # attachments follow
    assert after_page[f"wiki:page:{site.handbook}"].acl == before[f"wiki:page:{site.handbook}"].acl
    assert all(s.version == before[s.doc_id].version for s in after_page.values())

    # A restriction on an ancestor bumps no version but narrows every descendant.
    fake.restrict_page(site.handbook, groups=["finance"])
    after_parent = _stamps(connector)
    finance = group_token("wiki", fake.group("finance").id)
    assert len(after_parent[f"wiki:page:{site.onboarding}"].acl.layers) == 2
    assert [layer.groups for layer in after_parent[f"wiki:page:{site.handbook}"].acl.layers] == [
        {finance}
    ]
    snapshot = connector.sync_groups()
    bob = principal_for(snapshot, "bob@example.com")
    assert not after_parent[f"wiki:page:{site.onboarding}"].acl.permits(bob)  # bob not in finance
    assert after_parent[f"wiki:page:{site.home}"].acl.permits(bob)

    fake.restrict_page(site.handbook)  # lifted again
    assert _stamps(connector)[f"wiki:page:{site.onboarding}"].acl == onboarding


def test_mixed_user_and_group_layers(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # Page -> group finance; its parent -> bob. Bob reads it only once he is in finance.
    fake.restrict_page(site.onboarding, groups=["finance"])
    fake.restrict_page(site.handbook, users=["u-bob"])
    fake.set_group_members("finance", ["u-carol", "u-bob", "u-alice"])
    connector = connector_for()
    acl = _stamps(connector)[f"wiki:page:{site.onboarding}"].acl
    changes_acl = next(
        d.acl
        for b in connector.changes(None)
        for d in b.documents
        if d.doc_id == f"wiki:page:{site.onboarding}"
    )
    assert changes_acl == acl
    snapshot = connector.sync_groups()
    assert acl.permits(principal_for(snapshot, "bob@example.com"))
    assert not acl.permits(principal_for(snapshot, "alice@example.com"))  # in finance, not bob

    fake.set_group_members("finance", ["u-carol"])
    assert not acl.permits(principal_for(connector.sync_groups(), "bob@example.com"))


def test_hidden_email_users_become_account_tokens(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.restrict_page(site.runbook, users=["u-carol", "u-alice"])
    acl = _stamps(connector_for())[f"wiki:page:{site.runbook}"].acl
    (layer,) = acl.layers
    assert layer.users == {"alice@example.com"} and layer.groups == {"wiki:user:u-carol"}


def test_anonymous_space_is_public_but_restrictions_still_apply(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.set_space_permissions("ENG", groups=["eng"], anonymous=True)
    fake.restrict_page(site.onboarding, users=["u-alice"])
    stamps = _stamps(connector_for())
    assert stamps[f"wiki:page:{site.home}"].acl.public
    onboarding = stamps[f"wiki:page:{site.onboarding}"].acl
    snapshot_free = principal_for(connector_for().sync_groups(), "stranger@else.org")
    assert stamps[f"wiki:page:{site.home}"].acl.permits(snapshot_free)
    assert not onboarding.permits(snapshot_free)


def test_logged_in_users_space_is_readable_by_every_synced_user_only(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    """Regression (issue 18, item 3): the v2 logged-in-users role grants the site token,
    which the group sync gives every user it lists; a stranger gets nothing."""
    fake.set_space_permissions("OPS", logged_in=True)
    stamps = _stamps(connector_for())
    runbook = stamps[f"wiki:page:{site.runbook}"].acl
    assert not runbook.public
    snapshot = connector_for().sync_groups()
    assert snapshot.tenant_token in runbook.allow_groups
    assert runbook.permits(principal_for(snapshot, "alice@example.com"))
    assert not runbook.permits(principal_for(snapshot, "stranger@else.org"))


def test_unknown_principal_types_are_denied_and_logged(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, caplog
) -> None:
    fake.set_space_permissions("ENG", groups=["eng"], extra=[{"type": "role", "id": "viewers"}])
    fake.add_raw_restriction(site.onboarding, "group", {"type": "team", "id": "t-1"})
    with caplog.at_level(logging.WARNING, logger="connectors.confluence"):
        stamps = _stamps(connector_for())
    home = stamps[f"wiki:page:{site.home}"].acl
    assert home.allow_groups == {group_token("wiki", fake.group("eng").id)}
    onboarding = stamps[f"wiki:page:{site.onboarding}"].acl
    assert onboarding.layers and not onboarding.grants_anyone  # restricted to nobody known
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'role'" in messages and "'team'" in messages


def test_draft_ancestor_confcloud_77618_falls_back_per_ancestor(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    draft = fake.add_page("ENG", "Draft parent", "<p>wip</p>", parent=site.home, status="draft")
    fake.restrict_page(draft, groups=["finance"])
    child = fake.add_page("ENG", "Child", "<p>child</p>", parent=draft)
    connector = connector_for()
    batches = list(connector.changes(None))
    first = next(d for b in batches for d in b.documents if d.doc_id == f"wiki:page:{child}")
    finance = group_token("wiki", fake.group("finance").id)
    assert first.path == "ENG/Home/Draft parent/Child"
    assert [layer.groups for layer in first.acl.layers] == [{finance}]
    # v2 hides the draft parent: the chain comes from v2 /pages/{id}/ancestors (the
    # deprecated v1 content?expand=ancestors is no longer read).
    assert fake.calls_to(f"/wiki/api/v2/pages/{child}/ancestors")
    assert not [c for c in fake.calls if c.path == f"/wiki/rest/api/content/{child}"]

    fake.edit_page(child, "<p>child v2</p>")
    fake.clear_calls()
    docs = {d.doc_id: d for b in connector.changes(batches[-1].cursor) for d in b.documents}
    assert docs[f"wiki:page:{child}"].acl == first.acl
    assert docs[f"wiki:page:{child}"].path == first.path
    full, short = fake.calls_to("/wiki/rest/api/content/search")
    assert "ancestors.restrictions.read.restrictions.user" in (full.arg("expand") or "")
    assert "ancestors.restrictions" not in (short.arg("expand") or "")
    assert fake.calls_to(f"/wiki/rest/api/content/{draft}/restriction/byOperation/read")


def test_unreadable_ancestor_restrictions_fail_closed_and_are_retried_next_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, caplog
) -> None:
    """Regression (issue 18, item 5): a failed permission lookup (a 404 included) is a
    per-document failure, retried next run; never a deletion and never a guessed ACL."""
    draft = fake.add_page("ENG", "Draft parent", "<p>wip</p>", parent=site.home, status="draft")
    child = fake.add_page("ENG", "Child", "<p>child</p>", parent=draft)
    fake.fail_next(None, 404, path=f"/wiki/rest/api/content/{draft}/restriction")
    connector = connector_for()
    with caplog.at_level(logging.WARNING, logger="connectors.confluence"):
        stamps = _stamps(connector)
    # Listed (so never pruned) but readable by nobody until the lookup works again.
    assert stamps[f"wiki:page:{child}"].acl == Acl.empty()
    assert stamps[f"wiki:page:{site.onboarding}"].acl.allow_groups  # others unaffected
    assert any("empty ACL" in r.getMessage() for r in caplog.records)

    batches = list(connector.changes(None))
    child_id = f"wiki:page:{child}"
    assert child_id not in {d.doc_id for b in batches for d in b.documents}
    assert child_id not in {d for b in batches for d in b.deleted}
    (failure,) = [f for b in batches for f in b.failures if f.doc_id == child_id]
    assert "retried next run" in failure.reason
    cursor = batches[-1].cursor
    assert f"page:{child}" in json.loads(cursor)["retry"]

    # The next run reads it again by id although it did not change (CQL would not
    # show it): still failing, it stays a failure and stays in the retry list.
    again = list(connector.changes(cursor))
    assert child_id in {f.doc_id for b in again for f in b.failures}
    assert child_id not in {d for b in again for d in b.deleted}
    fake.clear_faults()
    fixed = list(connector.changes(again[-1].cursor))
    (doc,) = [d for b in fixed for d in b.documents if d.doc_id == child_id]
    assert doc.acl.allow_groups and doc.path == "ENG/Home/Draft parent/Child"
    assert "retry" not in json.loads(fixed[-1].cursor)


def test_a_page_whose_restrictions_404_is_deleted_only_when_the_page_itself_404s(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.fail_next(None, 404, path=f"/wiki/rest/api/content/{site.runbook}/restriction")
    batches = list(connector_for().changes(None))
    runbook = f"wiki:page:{site.runbook}"
    assert runbook not in {d for b in batches for d in b.deleted}  # the page answers: a failure
    assert runbook in {f.doc_id for b in batches for f in b.failures}


def test_restrictions_and_space_permissions_are_read_once_per_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    parent = site.onboarding
    for depth in range(6):
        parent = fake.add_page("ENG", f"Level {depth}", "<p>deep</p>", parent=parent)
    fake.restrict_page(site.handbook, groups=["eng"])
    connector = connector_for(include_attachments=False)
    stamps = _stamps(connector)
    assert stamps[f"wiki:page:{parent}"].path.count("/") == 9
    restriction_reads = Counter(
        c.path for c in fake.calls if c.path.endswith("/restriction/byOperation/read")
    )
    assert set(restriction_reads.values()) == {1}
    assert len(restriction_reads) == 10  # one per page in ENG and OPS
    permissions = Counter(c.path for c in fake.calls if c.path.endswith("/permissions"))
    assert set(permissions.values()) == {1}
    assert not [c for c in fake.calls if c.path.startswith("/wiki/api/v2/pages/")]


def test_sync_groups_reflects_membership_changes(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.v1_limit_cap = 1  # offset paging, one group / member per page
    connector = connector_for()
    first = connector.sync_groups()
    eng, finance = fake.group("eng"), fake.group("finance")
    eng_token, finance_token = group_token("wiki", eng.id), group_token("wiki", finance.id)
    assert first.source == "wiki"
    assert first.members[eng_token] == {
        "alice@example.com",
        "wiki:user:u-alice",
        "bob@example.com",
        "wiki:user:u-bob",
        "wiki:user:u-carol",
    }
    assert first.members["wiki:group:finance"] == first.members[finance_token]  # name alias
    users = {u.token: u.identities for u in first.users}
    assert users["wiki:user:u-bob"] == {"bob@example.com"}
    assert users["wiki:user:u-carol"] == frozenset()

    fake.set_group_members("finance", ["u-bob"])
    second = connector.sync_groups()
    assert second.members[finance_token] == {"bob@example.com", "wiki:user:u-bob"}
    assert finance_token in principal_for(second, "bob@example.com").groups
    by_id = [c for c in fake.calls if c.path.endswith("/membersByGroupId")]
    starts = [c.arg("start") for c in by_id]
    assert "1" in starts and "2" in starts  # members were paged by offset
    assert all(int(c.arg("limit") or 0) <= 200 for c in by_id)  # the documented maximum
    assert {c.path for c in by_id} >= {
        f"/wiki/rest/api/group/{fake.group('finance').id}/membersByGroupId"
    }
    assert not fake.calls_to("/wiki/rest/api/group/member")  # deprecated, needs `name`


def test_group_members_are_read_by_id_not_with_the_deprecated_name_endpoint(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    """Regression (issue 18, item 1): `/group/member?id=` answers 400 on a real site
    ("The 'name' query parameter is required"), which stopped every ingest."""
    refused = httpx.get(
        f"{fake.wiki_url}/rest/api/group/member",
        params={"id": fake.group("eng").id},
        auth=(fake.email, fake.token),
    )
    assert refused.status_code == 400 and "'name'" in refused.json()["message"]
    snapshot = connector_for().sync_groups()
    eng = group_token("wiki", fake.group("eng").id)
    assert snapshot.members[eng] >= {"alice@example.com", "wiki:user:u-carol"}


def test_folder_ancestors_give_path_and_layers(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    folder = fake.add_folder("ENG", "Policies")
    fake.restrict_page(folder, users=["u-alice"])
    policy = fake.add_page("ENG", "Leave policy", "<p>30 days</p>", parent=folder)
    stamps = _stamps(connector_for(include_attachments=False))
    stamp = stamps[f"wiki:page:{policy}"]
    assert stamp.path == "ENG/Policies/Leave policy"
    assert [layer.users for layer in stamp.acl.layers] == [{"alice@example.com"}]
    assert fake.calls_to(f"/wiki/api/v2/folders/{folder}")

    # If the folder cannot be read at all, the page stays listed but nobody may read it.
    fake.fail_next(None, 400, path=f"/wiki/api/v2/folders/{folder}")
    stamp = _stamps(connector_for(include_attachments=False))[f"wiki:page:{policy}"]
    assert stamp.acl == Acl.empty() and stamp.path == "ENG/Leave policy"


def test_space_added_to_the_configuration_is_enumerated_in_full(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    cursor = list(connector_for(spaces=["ENG"]).changes(None))[-1].cursor
    assert json.loads(cursor)["spaces"] == ["ENG"]
    fake.clear_calls()
    batches = list(connector_for(spaces=["ENG", "OPS"]).changes(cursor))
    docs = {d.doc_id for b in batches for d in b.documents}
    assert docs == {f"wiki:page:{site.runbook}", f"wiki:att:{site.notes_txt}"}
    assert not fake.calls_to("/wiki/rest/api/content/search")
    final = json.loads(batches[-1].cursor)
    assert final["mode"] == "cql" and final["spaces"] == ["ENG", "OPS"]
    assert final["watermark"] == json.loads(cursor)["watermark"]  # ENG catches up next run
    fake.edit_page(site.home, "<p>v2</p>")
    again = connector_for(spaces=["ENG", "OPS"]).changes(batches[-1].cursor)
    assert {d.doc_id for b in again for d in b.documents} == {f"wiki:page:{site.home}"}
