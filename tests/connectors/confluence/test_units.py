"""Pure pieces: CQL dates, the cursor, names and bodies, link resolution."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from connectors.confluence.client import ConfluenceClient, replace_query_param
from connectors.confluence.config import ConfluenceConfig
from connectors.confluence.cursor import SyncState, cql_date
from connectors.confluence.documents import extension, page_html, page_path, split_doc_id


def test_cql_date_applies_offset_and_floors_to_the_minute() -> None:
    when = datetime(2026, 3, 8, 1, 59, 59, tzinfo=UTC)
    assert cql_date(when, 0) == "2026-03-08 01:59"
    assert cql_date(when, 120) == "2026-03-08 03:59"
    assert cql_date(when, -300) == "2026-03-07 20:59"


def test_cursor_round_trip_and_pruning() -> None:
    wm = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    state = SyncState(mode="cql", watermark=wm)
    state.remember("page:1", "3", wm - timedelta(minutes=5))
    state.remember("page:2", "1", wm - timedelta(minutes=30))
    state.prune(timedelta(minutes=10))
    again = SyncState.from_cursor(state.to_cursor())
    assert again is not None
    assert again.mode == "cql" and again.watermark == wm
    assert again.already_seen("page:1", "3")
    assert not again.already_seen("page:1", "4")
    assert "page:2" not in again.seen  # older than the overlap window
    full = SyncState(mode="full", watermark=wm, done=["ENG"], space="OPS", next="/wiki/x?cursor=a")
    data = json.loads(full.to_cursor())
    assert data["done"] == ["ENG"] and data["next"] == "/wiki/x?cursor=a" and data["v"] == 1


def test_unreadable_cursor_means_full_enumeration(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert SyncState.from_cursor("not json") is None
        assert SyncState.from_cursor('{"v": 9, "mode": "cql", "watermark": "x"}') is None
    assert SyncState.from_cursor(None) is None
    assert len(caplog.records) == 2


def test_paths_ids_and_types() -> None:
    assert page_path("ENG", ["Home", "CI/CD"], "Runbook") == "ENG/Home/CI\u2215CD/Runbook"
    assert extension("Quarterly Report.PDF") == "pdf"
    assert extension("README") == ""
    assert extension(".hidden") == ""
    assert split_doc_id("wiki", "wiki:page:123") == ("page", "123")
    assert split_doc_id("wiki", "wiki:att:att9") == ("att", "att9")
    assert split_doc_id("wiki", "other:page:1") is None
    assert split_doc_id("wiki", "wiki:blog:1") is None


def test_page_html_keeps_code_from_cdata_and_escapes_title() -> None:
    html = page_html(
        "A <b> & C", "<p>x</p><ac:plain-text-body><![CDATA[a < b]]></ac:plain-text-body>"
    )
    text = html.decode()
    assert "<title>A &lt;b&gt; &amp; C</title>" in text
    assert "a &lt; b" in text and "CDATA" not in text


def test_links_resolve_on_the_configured_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "secret-value")
    config = ConfluenceConfig(
        url="https://acme.atlassian.net/wiki/", email="a@b.c", api_token={"env": "T_TOKEN"}
    )
    client = ConfluenceClient(config)
    try:
        assert client.url("/wiki/api/v2/spaces?cursor=x") == (
            "https://acme.atlassian.net/wiki/api/v2/spaces?cursor=x"
        )
        assert client.url("/rest/api/content/search?cursor=y") == (
            "https://acme.atlassian.net/wiki/rest/api/content/search?cursor=y"
        )
        assert client.url("/download/attachments/1/a.pdf?version=2") == (
            "https://acme.atlassian.net/wiki/download/attachments/1/a.pdf?version=2"
        )
        # An absolute link elsewhere is re-rooted: credentials never leave the site.
        assert client.url("https://evil.example/wiki/api/v2/pages?cursor=z") == (
            "https://acme.atlassian.net/wiki/api/v2/pages?cursor=z"
        )
    finally:
        client.close()


def test_replace_query_param_shrinks_expand() -> None:
    link = "/rest/api/content/search?cql=type+%3D+page&expand=a%2Cb&cursor=c"
    out = replace_query_param(link, "expand", "a")
    assert "expand=a&" in out and "cursor=c" in out and "cql=type+%3D+page" in out
