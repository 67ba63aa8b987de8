"""Full and incremental syncs against the fake: what comes back, what was asked, resuming."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from connectors.base import ChangeBatch, Connector, GroupSource
from connectors.confluence.cursor import cql_date, parse_time
from connectors.confluence.documents import page_html
from connectors.http import SourceUnavailable
from connectors.principals import group_token
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import FakeConfluence


def _docs(batches: list[ChangeBatch]) -> dict:
    return {d.doc_id: d for b in batches for d in b.documents}


def _cql_call_dates(fake: FakeConfluence) -> list[str]:
    out = []
    for call in fake.calls_to("/wiki/rest/api/content/search"):
        cql = call.arg("cql") or ""
        out.append(cql.split("lastmodified >= '", 1)[1].split("'", 1)[0])
    return out


def test_first_sync_reads_spaces_pages_and_attachments(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    assert isinstance(connector, Connector) and isinstance(connector, GroupSource)
    batches = list(connector.changes(None))
    docs = _docs(batches)

    assert set(docs) == {
        f"wiki:page:{site.home}",
        f"wiki:page:{site.handbook}",
        f"wiki:page:{site.onboarding}",
        f"wiki:page:{site.runbook}",
        f"wiki:att:{site.guide_pdf}",
        f"wiki:att:{site.notes_txt}",
    }  # drawing.vsdx (no parser) and the unconfigured SANDBOX space are left out
    onboarding = docs[f"wiki:page:{site.onboarding}"]
    assert onboarding.path == "ENG/Home/Handbook/Onboarding"
    assert onboarding.title == "Onboarding" and onboarding.version == "1"
    assert onboarding.doc_type == "html" and onboarding.source == "wiki"
    assert onboarding.uri == f"{fake.wiki_url}/spaces/ENG/pages/{site.onboarding}/Onboarding"
    assert onboarding.content is not None
    assert onboarding.content.startswith(b"<!DOCTYPE html>")
    assert b"<title>Onboarding</title>" in onboarding.content
    assert b"make setup &amp;&amp; echo &lt;ok&gt;" in onboarding.content  # CDATA kept as text
    assert onboarding.size == len(onboarding.content)
    assert onboarding.modified_at is not None
    assert abs(onboarding.modified_at - fake.page(site.onboarding).modified_at) < timedelta(
        milliseconds=1
    )

    guide = docs[f"wiki:att:{site.guide_pdf}"]
    assert guide.path == "ENG/Home/Handbook/Onboarding/guide.pdf"
    assert guide.doc_type == "pdf" and guide.content == b"%PDF-1.4 fake guide"
    assert guide.uri.startswith(f"{fake.wiki_url}/spaces/ENG/pages/{site.onboarding}/")

    eng = group_token("wiki", fake.group("eng").id)
    finance = group_token("wiki", fake.group("finance").id)
    assert onboarding.acl.allow_groups == {eng} and guide.acl == onboarding.acl
    assert not onboarding.acl.layers and not onboarding.acl.public
    # OPS: carol (hidden e-mail -> account token) and the finance group.
    assert docs[f"wiki:page:{site.runbook}"].acl.allow_groups == {finance, "wiki:user:u-carol"}

    assert all(b.cursor for b in batches)
    assert all(not b.failures and not b.deleted for b in batches)
    assert json.loads(batches[-1].cursor)["mode"] == "cql"
    # What the fake was asked.
    spaces_call = fake.calls_to("/wiki/api/v2/spaces")[0]
    assert spaces_call.path == "/wiki/api/v2/spaces" and spaces_call.arg("keys") == "ENG,OPS"
    pages_calls = [c for c in fake.calls if c.path.endswith("/pages") and "spaces" in c.path]
    assert pages_calls and all(c.arg("body-format") == "storage" for c in pages_calls)
    assert fake.calls_to(f"/wiki/api/v2/pages/{site.onboarding}/attachments")
    assert fake.calls_to(f"/wiki/download/attachments/{site.onboarding}/guide.pdf")
    assert not fake.calls_to(f"/wiki/download/attachments/{site.onboarding}/drawing.vsdx")
    assert not fake.calls_to("/wiki/rest/api/content/search")  # no CQL on a first run


def test_listings_follow_next_links_verbatim(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.v2_limit_cap = 1
    connector = connector_for(page_limit=1)
    batches = list(connector.changes(None))
    assert len(_docs(batches)) == 6

    spaces_calls = fake.calls_to("/wiki/api/v2/spaces")
    spaces_calls = [c for c in spaces_calls if c.path == "/wiki/api/v2/spaces"]
    assert len(spaces_calls) == 2
    assert spaces_calls[1].arg("cursor") and spaces_calls[1].arg("keys") == "ENG,OPS"
    eng_pages = [c for c in fake.calls if c.path.endswith("/pages") and "/spaces/" in c.path]
    assert sum(1 for c in eng_pages if c.arg("cursor")) >= 2  # next links, page after page
    # Mid-space batches carry the v2 next link; the one that ends a space does not.
    cursors = [json.loads(b.cursor) for b in batches[:-1]]
    assert cursors[0]["space"] == "ENG" and "cursor=" in cursors[0]["next"]
    assert any(c["done"] == ["ENG"] and c["next"] is None for c in cursors)


def test_incremental_sync_returns_only_the_edited_page(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    watermark = parse_time(json.loads(cursor)["watermark"])
    fake.clear_calls()

    fake.edit_page(site.handbook, "<p>Rewritten handbook</p>")
    batches = list(connector.changes(cursor))
    docs = _docs(batches)
    assert list(docs) == [f"wiki:page:{site.handbook}"]
    handbook = docs[f"wiki:page:{site.handbook}"]
    assert handbook.version == "2"
    assert handbook.content == page_html("Handbook", "<p>Rewritten handbook</p>")
    assert handbook.path == "ENG/Home/Handbook"
    assert handbook.acl.allow_groups == {group_token("wiki", fake.group("eng").id)}

    (search,) = fake.calls_to("/wiki/rest/api/content/search")
    expected = cql_date(watermark - timedelta(minutes=10), 0)
    assert search.arg("cql") == (
        "type in (page, attachment) and space in ('ENG', 'OPS') "
        f"and lastmodified >= '{expected}' order by lastmodified asc"
    )
    expand = (search.arg("expand") or "").split(",")
    assert {"body.storage", "version", "ancestors", "restrictions.read.restrictions.user"} <= set(
        expand
    )
    assert "ancestors.restrictions.read.restrictions.group" in expand
    # Restrictions came inline: none was read one by one.
    assert not [c for c in fake.calls if c.path.endswith("/restriction/byOperation/read")]
    state = json.loads(batches[-1].cursor)
    assert state["mode"] == "cql"
    assert parse_time(state["watermark"]) >= fake.page(site.handbook).modified_at.replace(
        microsecond=0
    )

    # Nothing changed since: the overlap re-reads the page, (id, version) dedupes it.
    again = list(connector.changes(batches[-1].cursor))
    assert _docs(again) == {}
    assert len(fake.calls_to("/wiki/rest/api/content/search")) == 2


def test_incremental_sync_reads_new_and_changed_attachments(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    new = fake.add_attachment(site.runbook, "escalation.md", b"# Escalation", "text/markdown")
    fake.edit_attachment(site.guide_pdf, b"%PDF-1.4 guide v2")
    fake.add_attachment(site.runbook, "diagram.vsdx", b"PK", "application/vnd.ms-visio.drawing")
    screenshot = fake.add_attachment(site.runbook, "screenshot.png", b"\x89PNG", "image/png")
    docs = _docs(list(connector.changes(cursor)))
    # Images are documents (read by OCR); a type with no parser is left out.
    assert set(docs) == {
        f"wiki:att:{new}",
        f"wiki:att:{site.guide_pdf}",
        f"wiki:att:{screenshot}",
    }
    assert docs[f"wiki:att:{site.guide_pdf}"].content == b"%PDF-1.4 guide v2"
    assert docs[f"wiki:att:{site.guide_pdf}"].version == "2"
    assert docs[f"wiki:att:{new}"].path == "OPS/Runbook/escalation.md"
    assert docs[f"wiki:att:{new}"].doc_type == "md"
    assert docs[f"wiki:att:{new}"].acl.allow_groups == {
        group_token("wiki", fake.group("finance").id),
        "wiki:user:u-carol",
    }


def test_cql_dates_are_in_the_users_time_zone(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.tz_offset_minutes = 120
    connector = connector_for(timezone_offset_minutes=120, overlap_minutes=0)
    cursor = list(connector.changes(None))[-1].cursor
    watermark = parse_time(json.loads(cursor)["watermark"])
    fake.clock.advance(minutes=5)
    fake.edit_page(site.runbook, "<p>v2</p>")
    docs = _docs(list(connector.changes(cursor)))
    assert list(docs) == [f"wiki:page:{site.runbook}"]
    assert _cql_call_dates(fake) == [cql_date(watermark, 120)]
    assert cql_date(watermark, 120) == (watermark + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")


def test_invalid_date_retries_one_hour_earlier(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    fake.edit_page(site.home, "<p>v2</p>")
    fake.invalid_cql_date_next()
    docs = _docs(list(connector.changes(cursor)))
    assert list(docs) == [f"wiki:page:{site.home}"]
    first, second = _cql_call_dates(fake)
    assert parse_time(first.replace(" ", "T") + ":00Z") - parse_time(
        second.replace(" ", "T") + ":00Z"
    ) == timedelta(hours=1)


def test_failure_mid_full_run_resumes_from_last_cursor(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    connector = connector_for(page_limit=1)
    run = connector.changes(None)
    first = next(run)
    assert first.documents and first.cursor
    fake.fail_next(None, 503, path="/wiki/api/v2/spaces/")
    with pytest.raises(SourceUnavailable):
        for _ in run:
            pass
    assert sleeps  # it backed off before giving up
    fake.clear_faults()

    resumed = list(connector.changes(first.cursor))
    before, after = set(_docs([first])), set(_docs(resumed))
    assert not before & after  # resumed after the committed batch
    full = set(_docs(list(connector_for().changes(None))))
    assert before | after == full


def test_failure_mid_incremental_run_resumes_from_last_cursor(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for(page_limit=1, include_attachments=False)
    cursor = list(connector.changes(None))[-1].cursor
    for page_id in (site.home, site.handbook, site.runbook):
        fake.clock.advance(minutes=1)
        fake.edit_page(page_id, f"<p>edit of {page_id}</p>")
    run = connector.changes(cursor)
    # The overlap re-reads the pages indexed by the first run (de-duplicated away)
    # before reaching the first edit.
    first = next(run)
    while not first.documents:
        first = next(run)
    assert [d.doc_id for d in first.documents] == [f"wiki:page:{site.home}"]
    fake.fail_next(None, 500, path="/wiki/rest/api/content/search")
    with pytest.raises(SourceUnavailable):
        list(run)
    fake.clear_faults()
    resumed = [d.doc_id for b in connector.changes(first.cursor) for d in b.documents]
    assert resumed == [f"wiki:page:{site.handbook}", f"wiki:page:{site.runbook}"]


def test_empty_search_page_with_next_ends_the_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for()
    cursor = list(connector.changes(None))[-1].cursor
    fake.edit_page(site.home, "<p>v2</p>")
    fake.empty_search_page_next()
    batches = list(connector.changes(cursor))
    assert _docs(batches) == {}
    assert len(fake.calls_to("/wiki/rest/api/content/search")) == 1
    assert json.loads(batches[-1].cursor)["watermark"] == json.loads(cursor)["watermark"]


def test_without_attachments_nothing_about_them_is_asked(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for(include_attachments=False)
    batches = list(connector.changes(None))
    assert all(":page:" in d for d in _docs(batches))
    assert not [c for c in fake.calls if "attachment" in c.path]
    list(connector.changes(batches[-1].cursor))
    (search,) = fake.calls_to("/wiki/rest/api/content/search")
    assert (search.arg("cql") or "").startswith("type = page and ")


def test_every_non_personal_space_type_when_none_configured(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, caplog
) -> None:
    """Regression (issue 18, item 4): `type=global` left collaboration and knowledge_base
    spaces out without a word. Every type but personal is read; what is skipped is said."""
    fake.add_space("~u-alice", "Alice's space", users=["u-alice"], type="personal")
    fake.add_space("TEAM", "Team space", groups=["eng"], type="collaboration")
    fake.add_space("KB", "Help centre", groups=["eng"], type="knowledge_base")
    fake.add_page("TEAM", "Plan", "<p>team plan</p>")
    kb_page = fake.add_page("KB", "Reset a password", "<p>steps</p>")
    fake.add_page("~u-alice", "Diary", "<p>private</p>")
    connector = connector_for(spaces=[])
    with caplog.at_level(logging.WARNING, logger="connectors.confluence"):
        batches = list(connector.changes(None))
    docs = _docs(batches)
    roots = {d.path.split("/", 1)[0] for d in docs.values()}
    assert roots == {"ENG", "OPS", "SANDBOX", "TEAM", "KB"}
    assert connector.skipped_spaces == ["~u-alice (personal)"]
    assert any("~u-alice (personal)" in r.getMessage() for r in caplog.records)
    spaces_call = fake.calls_to("/wiki/api/v2/spaces")[0]
    assert spaces_call.arg("type") is None and spaces_call.arg("keys") is None

    fake.edit_page(kb_page, "<p>new steps</p>")
    fake.clear_calls()
    later = _docs(list(connector.changes(batches[-1].cursor)))
    assert f"wiki:page:{kb_page}" in later  # CQL names the listed spaces, KB included
    (search,) = fake.calls_to("/wiki/rest/api/content/search")
    cql = search.arg("cql") or ""
    assert "space.type" not in cql and "'KB'" in cql and "'~u-alice'" not in cql
