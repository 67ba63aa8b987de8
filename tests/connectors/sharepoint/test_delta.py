"""Drive delta against the fake: first sync, incremental, deletes, renames, 410, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest

from connectors.base import ChangeBatch
from connectors.errors import ConnectorError
from connectors.http import SourceUnavailable
from connectors.sharepoint.connector import DELTA_SELECT, document_id
from tests.connectors.sharepoint.fake import PAYLOADS, perm_user


def run(connector, cursor=None) -> list[ChangeBatch]:
    return list(connector.changes(cursor))


def docs_of(batches):
    return {d.doc_id: d for b in batches for d in b.documents}


def delta_requests(fake):
    return fake.requests_to(r"/root/delta$")


def test_first_sync_pages_through_two_delta_pages(fake, make_connector):
    connector = make_connector(page_size=4)
    drive = fake.ids["drive"]
    batches = run(connector)

    # Two delta requests: the first with $select/$top, the second the nextLink verbatim.
    first, second = delta_requests(fake)
    assert first.query == {"$select": DELTA_SELECT, "$top": "4"}
    assert set(second.query) == {"$skiptoken"}
    assert len(batches) == 2
    first_links = json.loads(batches[0].cursor)["drives"]
    assert "$skiptoken=" in first_links[drive]  # a mid-drive batch carries the nextLink
    last_links = json.loads(batches[-1].cursor)["drives"]
    assert "token=" in last_links[drive] and "$skiptoken" not in last_links[drive]
    assert not any(b.complete for b in batches)

    docs = docs_of(batches)
    paths = sorted(d.path for d in docs.values())
    assert paths == [
        "Documents/Public/handbook.html",
        "Documents/Restricted/salaries.txt",
        "Documents/Specs/api.txt",
        "Documents/Specs/design.md",
    ]  # folders and the root are not documents
    design = docs[document_id("sp", drive, fake.ids["design"])]
    item = fake.items[fake.ids["design"]]
    assert design.version == f'"{{{item.guid.upper()}}},1"'
    assert design.uri == f"{fake.sharepoint_url}/sites/eng/Shared%20Documents/Specs/design.md"
    assert (design.title, design.doc_type, design.size) == ("design", "md", len(item.content))
    assert design.content is None  # fetched later
    assert design.modified_at is not None and design.modified_at.tzinfo is not None
    assert design.author == "alice@contoso.com"
    # Permissions were read through JSON batching, one sub-request per file.
    inner = fake.requests_to(r"/permissions$", inner=True)
    assert len(inner) == 4 and len(fake.requests_to(r"/\$batch$")) == 1


def test_incremental_run_returns_only_the_changed_item(fake, make_connector):
    connector = make_connector()
    cursor = run(connector)[-1].cursor
    fake.edit_file(fake.ids["design"], "# Design v2\n")
    before = len(fake.requests)

    batches = run(connector, cursor)

    sent = fake.requests[before:]
    deltas = [r for r in sent if r.path.endswith("/root/delta")]
    assert len(deltas) == 1 and deltas[0].query["token"] == cursor_token(cursor)
    assert [d.doc_id for b in batches for d in b.documents] == [
        document_id("sp", fake.ids["drive"], fake.ids["design"])
    ]
    assert batches[-1].documents[0].version.endswith(',2"')
    assert len([r for r in sent if r.path.endswith("/permissions")]) == 1
    # Nothing changed since: an empty batch that still moves the cursor on.
    again = run(connector, batches[-1].cursor)
    assert [len(b.documents) + len(b.deleted) for b in again] == [0]
    assert again[-1].cursor is not None


def cursor_token(cursor: str) -> str:
    link = next(iter(json.loads(cursor)["drives"].values()))
    return link.split("token=", 1)[1]


def test_deleted_item_is_reported_deleted(fake, make_connector):
    connector = make_connector()
    cursor = run(connector)[-1].cursor
    fake.delete_file(fake.ids["api"])

    batches = run(connector, cursor)

    assert [d for b in batches for d in b.deleted] == [
        document_id("sp", fake.ids["drive"], fake.ids["api"])
    ]
    assert not docs_of(batches)


def test_rename_and_move_keep_the_id_and_update_path_and_title(fake, make_connector):
    cursor = run(make_connector())[-1].cursor
    fake.rename_file(fake.ids["api"], "api-v2.txt", new_folder="Archive/2026")
    # A fresh connector (a new run) knows no folders: the new parent is looked up once.
    connector = make_connector()
    before = len(fake.requests)

    batches = run(connector, cursor)

    docs = docs_of(batches)
    doc = docs[document_id("sp", fake.ids["drive"], fake.ids["api"])]
    assert doc.path == "Documents/Archive/2026/api-v2.txt"
    assert doc.title == "api-v2"
    assert doc.version.endswith(',2"')  # eTag moves on a rename, so the pipeline refreshes it
    assert not any(b.deleted for b in batches)
    # The new folders came in the same delta page; only their parent, the root, was looked up.
    lookups = [r.path for r in fake.requests[before:] if "/items/" in r.path and not r.inner]
    assert lookups == [
        f"/v1.0/drives/{fake.ids['drive']}/items/{fake.drives[fake.ids['drive']].root_id}"
    ]


def test_unknown_parent_is_resolved_with_an_item_lookup(fake, make_connector):
    cursor = run(make_connector())[-1].cursor
    fake.edit_file(fake.ids["secret"], "new bands")
    connector = make_connector()  # no folder map: Restricted/ is not in this delta

    doc = docs_of(run(connector, cursor))[document_id("sp", fake.ids["drive"], fake.ids["secret"])]

    assert doc.path == "Documents/Restricted/salaries.txt"
    parent = fake.items[fake.ids["secret"]].parent_id
    assert len(fake.requests_to(rf"/items/{parent}$")) == 1


def test_repeated_ids_keep_the_last_state_and_skip_folders_and_packages(fake, make_connector):
    drive = fake.ids["drive"]
    text = (PAYLOADS / "delta_repeated_page.json").read_text()
    page = json.loads(text.replace("{graph}", fake.graph_url).replace("{drive}", drive))
    fake.queue_response("GET", f"/v1.0/drives/{drive}/root/delta", 200, page)
    fake.queue_response(
        "GET",
        f"/v1.0/drives/{drive}/items/01FILEREPEAT/permissions",
        200,
        {"value": [perm_user("alice@contoso.com", "a1")]},
    )

    (batch,) = run(make_connector())

    assert [(d.doc_id, d.path, d.version) for d in batch.documents] == [
        (
            document_id("sp", drive, "01FILEREPEAT"),
            "Documents/Notes/final.txt",
            '"{33333333-3333-4333-8333-333333333333},3"',
        )
    ]
    assert batch.deleted == [document_id("sp", drive, "01GONEREPEAT")]
    assert json.loads(batch.cursor)["drives"][drive].endswith("token=1-999")


def test_expired_delta_token_relists_every_drive_and_completes(fake, make_connector):
    connector = make_connector(page_size=3)
    cursor = run(connector)[-1].cursor
    fake.delete_file(fake.ids["secret"])
    fake.expire_delta_links()
    before = len(fake.requests)

    batches = run(make_connector(page_size=3), cursor)

    deltas = [r for r in fake.requests[before:] if r.path.endswith("/root/delta")]
    assert "token" in deltas[0].query  # answered 410 Gone
    assert deltas[1].query.get("$select") == DELTA_SELECT  # then a fresh enumeration
    assert all(b.cursor is None and not b.complete for b in batches[:-1])
    final = batches[-1]
    assert final.complete and final.cursor is not None and not final.documents
    listed = docs_of(batches)
    assert document_id("sp", fake.ids["drive"], fake.ids["secret"]) not in listed
    assert len(listed) == 3
    # The new cursor works: the next run is incremental again.
    fake.edit_file(fake.ids["api"], "v2")
    later = run(connector, final.cursor)
    assert [d.doc_id for b in later for d in b.documents] == [
        document_id("sp", fake.ids["drive"], fake.ids["api"])
    ]
    assert not any(b.complete for b in later)


def test_a_failure_mid_run_resumes_from_the_last_next_link(fake, make_connector):
    drive = fake.ids["drive"]
    connector = make_connector(page_size=4)
    changes = connector.changes(None)
    first = next(changes)
    next_link = json.loads(first.cursor)["drives"][drive]
    assert "$skiptoken=" in next_link
    # The next page keeps failing past the retry budget: the run stops with an error.
    fake.queue_response("GET", f"/v1.0/drives/{drive}/root/delta", 503, {}, times=10)
    with pytest.raises(SourceUnavailable):
        next(changes)
    fake.clear_faults()
    before = len(fake.requests)

    resumed = run(make_connector(page_size=4), first.cursor)

    deltas = [r for r in fake.requests[before:] if r.path.endswith("/root/delta")]
    assert deltas[0].query == {"$skiptoken": next_link.split("$skiptoken=", 1)[1]}
    docs = docs_of(resumed)
    assert len(docs) == 4  # page two holds every file of this tree
    assert "Documents/Specs/design.md" in {d.path for d in docs.values()}
    assert "token=" in json.loads(resumed[-1].cursor)["drives"][drive]


def test_excluded_paths_are_skipped_and_moves_into_them_reported_deleted(fake, make_connector):
    connector = make_connector()
    scope = connector.scope
    connector.scope = dataclasses.replace(scope, exclude=(*scope.exclude, "**/Restricted/**"))
    batches = run(connector)
    assert "Documents/Restricted/salaries.txt" not in {d.path for d in docs_of(batches).values()}
    fake.rename_file(fake.ids["api"], "api.txt", new_folder="Restricted")

    later = run(connector, batches[-1].cursor)

    assert [d for b in later for d in b.deleted] == [
        document_id("sp", fake.ids["drive"], fake.ids["api"])
    ]


def test_configured_drive_ids_work_without_sites(fake, make_connector):
    connector = make_connector(sites=[], drives=[fake.ids["drive"]])
    docs = docs_of(run(connector))
    assert len(docs) == 4
    assert len(fake.requests_to(r"^/v1\.0/sites/")) == 0
    site_id = fake.sites["eng"].collection_id
    design = docs[document_id("sp", fake.ids["drive"], fake.ids["design"])]
    assert f"sp:sitegroup:{site_id}:3" in design.acl.allow_groups


def test_missing_site_and_foreign_cursor_links_are_refused(fake, make_connector):
    with pytest.raises(
        ConnectorError, match=r"site contoso\.sharepoint\.com:/sites/nope not found"
    ):
        run(make_connector(sites=["nope"]))
    connector = make_connector()
    evil = json.dumps({"v": 1, "drives": {fake.ids["drive"]: "https://evil.example/delta"}})
    with pytest.raises(ConnectorError, match="not a Graph link"):
        run(connector, evil)
    with pytest.raises(ConnectorError, match="unreadable cursor"):
        run(connector, "not json")


def test_several_drives_share_one_cursor_and_a_410_on_one_relists_all(fake, make_connector):
    wiki = fake.add_drive("Wiki", "eng")
    page = fake.add_file(wiki, "Home.md", "# Home\n")
    connector = make_connector()
    first = run(connector)
    links = json.loads(first[-1].cursor)["drives"]
    assert set(links) == {fake.ids["drive"], wiki.id}
    assert document_id("sp", wiki.id, page) in docs_of(first)
    assert docs_of(first)[document_id("sp", wiki.id, page)].path == "Wiki/Home.md"

    # Only the Wiki changed: the Documents drive answers an empty delta.
    fake.edit_file(page, "# Home v2\n")
    later = run(connector, first[-1].cursor)
    assert [d.doc_id for b in later for d in b.documents] == [document_id("sp", wiki.id, page)]

    # One expired token turns the run into a complete listing of both drives.
    stale = json.loads(later[-1].cursor)
    stale["drives"][wiki.id] = stale["drives"][wiki.id].replace("token=1-", "token=0-")
    relisted = run(connector, json.dumps(stale))
    assert relisted[-1].complete
    assert len(docs_of(relisted)) == 5
    assert set(json.loads(relisted[-1].cursor)["drives"]) == {fake.ids["drive"], wiki.id}


def test_a_drive_missing_from_the_cursor_starts_from_scratch(fake, make_connector):
    connector = make_connector()
    cursor = run(connector)[-1].cursor
    wiki = fake.add_drive("Wiki", "eng")
    fake.add_file(wiki, "Home.md", "# Home\n")

    batches = run(make_connector(), cursor)

    assert [d.path for b in batches for d in b.documents] == ["Wiki/Home.md"]
    assert not any(b.complete for b in batches)
