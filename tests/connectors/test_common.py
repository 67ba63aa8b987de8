"""The pieces the connectors share: cursor envelope, times, URL redaction, scope, retries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from werkzeug import Response

from connectors.common import (
    UnreadableCursor,
    dump_cursor,
    load_cursor,
    parse_http_date,
    parse_iso_time,
    redact_url,
)
from connectors.confluence.client import NotFound as ConfluenceNotFound
from connectors.confluence.cursor import parse_time
from connectors.errors import DocumentGone
from connectors.filesystem import FilesystemConnector
from connectors.http import (
    HttpClient,
    NotFound,
    SourceAuthError,
    SourceUnavailable,
    UnexpectedResponse,
    json_object,
)
from connectors.scope import SourceScope
from connectors.sharepoint.client import NotFound as GraphNotFound
from connectors.sharepoint.permissions import expired
from connectors.web.state import PageState, dump_state, load_state
from core.acl import Principal
from core.paths import EXACT_ONLY
from core.retry import RetryBudget, RetryPolicy
from pipelines.config import SourceConfig
from retrieval.index.opensearch.bulk import BulkPolicy

# -- cursors --------------------------------------------------------------------------


def test_a_cursor_round_trips_with_its_version():
    fields = {"drives": {"b!1": "https://graph/delta?token=1"}, "mode": "full", "n": 3}
    cursor = dump_cursor(fields, version=2)
    assert load_cursor(cursor, version=2) == {**fields, "v": 2}
    # Compact and in a stable order, so equal state is an equal string.
    assert cursor == dump_cursor(dict(reversed(fields.items())), version=2)
    assert ", " not in cursor and ": " not in cursor


@pytest.mark.parametrize(
    ("cursor", "why"),
    [
        ("not json at all", "not JSON"),
        ('{"v": 1, "drives": {"b!1": "https://gr', "not JSON"),  # cut short
        ('["v", 1]', "not a JSON object"),
        ('"v"', "not a JSON object"),
        ('{"drives": {}}', "version None"),  # written before versions, or by someone else
        ('{"v": 9, "drives": {}}', "version 9"),
        ('{"v": "1", "drives": {}}', "version '1'"),
    ],
)
def test_a_garbage_or_foreign_cursor_is_refused_with_why(cursor, why):
    with pytest.raises(UnreadableCursor, match=why):
        load_cursor(cursor, version=1)


def test_a_tampered_cursor_is_refused_not_half_read():
    cursor = dump_cursor({"start_after": "docs/9.txt", "bucket": "b"}, version=1)
    with pytest.raises(UnreadableCursor):
        load_cursor(cursor.replace("}", ""), version=1)
    with pytest.raises(UnreadableCursor):
        load_cursor(cursor.replace('"v":1', '"v":0'), version=1)


def test_each_connector_decides_what_an_unreadable_cursor_means(tmp_path: Path):
    # The web connector starts from the start URLs again ...
    page = PageState(doc_id="site:https://x.test/a", version="sha256:1", etag='"e1"')
    assert load_state(dump_state({"https://x.test/a": page})) == {"https://x.test/a": page}
    assert load_state("garbage") == {}
    # ... and the filesystem hashes every file again: a complete listing either way.
    (tmp_path / "a.md").write_text("a")
    fs = FilesystemConnector(SourceScope(name="docs", max_bytes=1_000, root=tmp_path))
    first = next(fs.changes(None))
    again = next(fs.changes("{not a cursor"))
    assert again.complete and [d.version for d in again.documents] == [
        d.version for d in first.documents
    ]
    assert json.loads(first.cursor or "")["files"]["a.md"][2] == first.documents[0].version


# -- times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 21 Oct 2026 07:28:00 GMT", datetime(2026, 10, 21, 7, 28, tzinfo=UTC)),
        ("Wed, 21 Oct 2026 09:28:00 +0200", datetime(2026, 10, 21, 7, 28, tzinfo=UTC)),
        ("Wed Oct 21 07:28:00 2026", datetime(2026, 10, 21, 7, 28, tzinfo=UTC)),  # asctime
    ],
)
def test_http_dates_are_aware_datetimes(value, expected):
    when = parse_http_date(value)
    assert when == expected and when is not None and when.tzinfo is not None


@pytest.mark.parametrize("value", [None, "", "soon", "120", "Wed, 99 Foo 2026 07:28:00 GMT"])
def test_an_unreadable_http_date_is_none(value):
    assert parse_http_date(value) is None


def test_iso_times_keep_their_offset_and_a_bare_one_is_utc():
    assert parse_iso_time("2026-02-02T12:00:00Z") == datetime(2026, 2, 2, 12, tzinfo=UTC)
    plus_one = parse_iso_time("2026-02-02T13:00:00+01:00")
    assert plus_one is not None and plus_one.utcoffset() == timedelta(hours=1)
    assert plus_one == datetime(2026, 2, 2, 12, tzinfo=UTC)
    assert parse_iso_time("2026-02-02T12:00:00") == datetime(2026, 2, 2, 12, tzinfo=UTC)
    # Confluence's reading turns every zone into UTC.
    assert parse_time("2026-02-02T13:00:00+01:00") == datetime(2026, 2, 2, 12, tzinfo=UTC)
    assert parse_time("2026-02-02T13:00:00+01:00").tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-45T00:00:00Z", 1738497600, []])
def test_an_unreadable_iso_time_is_none(value):
    assert parse_iso_time(value) is None
    assert parse_time(value) is None


def test_an_unreadable_sharepoint_expiry_grants_nothing():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert expired({"expirationDateTime": "not a time"}, now)  # fail closed
    assert not expired({"expirationDateTime": "0001-01-01T00:00:00Z"}, now)  # never
    assert expired({"expirationDateTime": "2026-05-31T23:59:59Z"}, now)
    assert not expired({"expirationDateTime": "2026-06-01T00:00:01"}, now)  # bare: UTC


# -- URLs in messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.blob.core.windows.net/c/salaries.pdf?sv=2024-05&sig=S3CR3T%2Bsig",
        "https://graph.microsoft.com/v1.0/drives/b!1/root/delta?token=S3CR3T",
        "https://intranet.test/download?access_token=S3CR3T&x=1",
    ],
)
def test_a_redacted_url_keeps_where_it_points_and_drops_its_query(url):
    redacted = redact_url(url)
    assert "S3CR3T" not in redacted and "?" not in redacted
    assert url.startswith(redacted) and redacted.count("/") == url.split("?")[0].count("/")
    assert redact_url(httpx.URL(url)) == redacted


def test_http_errors_name_the_url_without_its_credentials(httpserver):
    httpserver.expect_request("/files/a.pdf").respond_with_response(Response(status=401))
    httpserver.expect_request("/busy").respond_with_response(Response(status=503))
    http = HttpClient(httpx.Client(timeout=5), RetryPolicy(max_attempts=2), sleep=lambda _: None)
    for path, error in (("/files/a.pdf", SourceAuthError), ("/busy", SourceUnavailable)):
        with pytest.raises(error) as raised:
            http.get(httpserver.url_for(path) + "?sig=S3CR3T&token=T0K3N")
        assert path in str(raised.value)
        assert "S3CR3T" not in str(raised.value) and "T0K3N" not in str(raised.value)
    http.close()


# -- JSON bodies and NotFound ----------------------------------------------------------


def test_a_json_body_must_be_an_object():
    ok = httpx.Response(200, json={"value": []})
    assert json_object(ok, "GET /x") == {"value": []}
    for bad in (
        httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json=["not", "an", "object"]),
    ):
        with pytest.raises(UnexpectedResponse, match="GET /x") as raised:
            json_object(bad, "GET /x")
        assert isinstance(raised.value, SourceUnavailable)


def test_not_found_is_one_kind_and_only_graph_says_it_means_deleted():
    graph, wiki = GraphNotFound("gone", 404), ConfluenceNotFound("gone", 404, "No content")
    assert isinstance(graph, NotFound) and isinstance(wiki, NotFound)
    assert graph.status == wiki.status == 404 and wiki.detail == "No content"
    # A Confluence 404 may be a permission lookup: never a deletion by itself.
    assert isinstance(graph, DocumentGone) and not isinstance(wiki, DocumentGone)


# -- scope ----------------------------------------------------------------------------


def test_scope_include_and_exclude():
    everything = SourceScope(name="docs", max_bytes=10)
    assert everything.selects(("hr/pay.md",)) and everything.selects(("a/b/c.txt",))
    hr = SourceScope(name="docs", max_bytes=10, include=("hr/**",), exclude=("**/*.tmp",))
    assert hr.selects(("hr/pay.md",))
    assert not hr.selects(("handbook/a.md",))  # not included
    assert not hr.selects(("hr/draft.tmp",))  # excluded wins
    assert not hr.selects(("hr/pay.md", "handbook/pay.md"))  # every path must be included


def test_scope_holds_every_reading_unless_told_the_path_is_exact():
    scope = SourceScope(name="docs", max_bytes=10, exclude=("hr/**",))
    for dodge in ("hr//x.md", "hr/./x.md", "a/../hr/x.md", "HR/x.md"):
        assert not scope.selects((dodge,)), dodge
    # Graph and URL paths are the server's own spelling: matched as written.
    assert scope.selects(("HR/x.md",), EXACT_ONLY)
    assert not scope.selects(("hr/x.md",), EXACT_ONLY)


def test_a_source_config_hands_its_connector_the_scope(tmp_path: Path):
    config = SourceConfig.model_validate(
        {
            "name": "docs",
            "path": str(tmp_path),
            "follow_symlinks": True,
            "include": ["hr/**"],
            "exclude": ["**/*.tmp"],
            "limits": {"max_bytes": 1234},
            "retry": {"max_attempts": 3, "max_total_s": 9},
            "acl": {"rules": [{"match": "hr/**", "allow_groups": ["hr"]}]},
        }
    )
    scope = config.scope()
    assert (scope.name, scope.root, scope.follow_symlinks) == ("docs", tmp_path, True)
    assert (scope.include, scope.exclude, scope.max_bytes) == (("hr/**",), ("**/*.tmp",), 1234)
    assert scope.retry == RetryPolicy(max_attempts=3, max_total_s=9)
    assert scope.acl.acl_for_path("hr/a.md").permits(Principal.of("dana", ["hr"]))
    assert not scope.acl.acl_for_path("hr/a.md").permits(Principal.of("sam", ["staff"]))
    assert config.connector_settings is None


# -- retries --------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_the_attempts_run_out():
    budget = RetryBudget(RetryPolicy(max_attempts=5, max_delay_s=3.0), rand=lambda: 1.0)
    waits = [budget.after_failure(spent_s=0.0) for _ in range(5)]
    assert [w.delay_s for w in waits[:4]] == [1.0, 2.0, 3.0, 3.0]
    assert not any(w.give_up for w in waits[:4]) and waits[4].out_of_attempts
    low = RetryBudget(RetryPolicy(), rand=lambda: 0.0)
    assert [low.after_failure(0.0).delay_s for _ in range(3)] == [0.5, 1.0, 2.0]


def test_a_server_wait_is_honoured_in_full_but_not_past_the_time_budget():
    budget = RetryBudget(RetryPolicy(max_delay_s=60.0, max_total_s=300.0))
    asked = budget.after_failure(spent_s=10.0, server_wait_s=90.0)
    assert asked.delay_s == 90.0 and asked.server_asked and not asked.give_up
    late = budget.after_failure(spent_s=250.0, server_wait_s=90.0)
    assert late.out_of_time and not late.out_of_attempts


def test_the_bulk_writer_counts_retries_only():
    policy = BulkPolicy(max_retries=2, initial_backoff_s=1.0, max_backoff_s=4.0).retry_policy()
    budget = RetryBudget(policy, rand=lambda: 1.0)
    delays = []
    while budget.can_retry():
        delays.append(budget.after_failure(spent_s=1e9).delay_s)  # no time bound
    assert delays == [1.0, 2.0]
