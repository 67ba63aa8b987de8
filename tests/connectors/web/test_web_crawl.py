"""WebConnector against a real HTTP server on 127.0.0.1 (pytest-httpserver), driven by httpx."""

from __future__ import annotations

import hashlib
import json

import pytest

from connectors.base import ChangeBatch
from connectors.errors import ConnectorError
from connectors.web.connector import CrawlIncomplete, PageGone, PageNotIndexable, WebConnector
from connectors.web.guard import BlockedAddress
from core.acl import Principal
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from tests.connectors.web.fake import FakeWeb, html_page, make_source_config


def crawl(connector: WebConnector, cursor: str | None = None) -> list[ChangeBatch]:
    return list(connector.changes(cursor))


def docs(batches: list[ChangeBatch]) -> dict:
    return {d.doc_id: d for b in batches for d in b.documents}


def failures(batches: list[ChangeBatch]) -> dict:
    return {f.doc_id: f.reason for b in batches for f in b.failures}


def ids(fake: FakeWeb, *paths: str) -> set[str]:
    return {f"site:{fake.url}{p}" for p in paths}


SEEDED = ("/", "/about", "/docs/vacation", "/docs/expenses")


def test_first_crawl_obeys_robots_reads_sitemaps_and_follows_links(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    batches = crawl(connector)

    assert set(docs(batches)) == ids(fake_web, *SEEDED)
    assert batches[-1].complete and not failures(batches)
    paths = fake_web.paths()
    assert paths.count("/robots.txt") == 1  # cached for the run
    assert "/sitemap_index.xml" in paths and "/sitemaps/docs.xml.gz" in paths
    assert "/private/salaries" not in paths  # Disallow: /private/
    assert not [r for r in fake_web.requests if r.host == "localhost"]  # off-host link
    assert all(
        r.headers["User-Agent"] == "TroveBot/0.1 (+https://example.invalid/bot)"
        for r in fake_web.requests
    )

    page = docs(batches)[f"site:{fake_web.url}/docs/vacation"]
    body = fake_web.pages["/docs/vacation"].body
    assert page.content == body
    assert page.version == "sha256:" + hashlib.sha256(body).hexdigest()
    assert page.title == "Vacation policy" and page.doc_type == "html"
    assert page.uri == f"{fake_web.url}/docs/vacation" and page.path == "/docs/vacation"
    assert page.modified_at is not None and page.modified_at.year == 2026
    assert page.acl.public


def test_second_crawl_sends_validators_and_304_keeps_the_version(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    first = crawl(connector)
    fake_web.requests.clear()
    second = crawl(connector, first[-1].cursor)

    for path in SEEDED:
        (request,) = fake_web.requested(path)
        etag = hashlib.sha1(fake_web.pages[path].body).hexdigest()
        assert request.headers["If-None-Match"] == f'"{etag}"'
        assert request.headers["If-Modified-Since"] == "Mon, 05 Jan 2026 09:00:00 GMT"
    before, after = docs(first), docs(second)
    assert set(after) == set(before) and second[-1].complete
    for doc_id, doc in after.items():
        assert doc.version == before[doc_id].version  # the pipeline sees "unchanged"
        assert doc.content is None and doc.title == before[doc_id].title
    assert connector.last_report.not_modified == 4


def test_links_of_an_unchanged_page_are_still_followed(fake_web, web_connector):
    fake_web.html("/", "Home", "Start here.", links=["/hub"])
    fake_web.html("/hub", "Hub", "Links only.", links=["/leaf"])
    fake_web.html("/leaf", "Leaf", "Reachable only through the hub.")
    connector = web_connector()
    first = crawl(connector)
    second = crawl(connector, first[-1].cursor)  # the hub answers 304: links from the cursor
    assert f"site:{fake_web.url}/leaf" in docs(second)
    assert second[-1].complete


def test_new_bytes_change_the_version_and_a_new_etag_alone_does_not(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    first = crawl(connector)
    fake_web.edit("/docs/vacation", "Employees now get 30 days of paid vacation.")
    fake_web.rotate_etag("/about")
    second = crawl(connector, first[-1].cursor)
    before, after = docs(first), docs(second)
    changed = {i for i in after if after[i].version != before[i].version}
    assert changed == ids(fake_web, "/docs/vacation")
    about = after[f"site:{fake_web.url}/about"]
    assert about.content is not None  # re-downloaded (200) but identical bytes
    assert fake_web.requested("/about")[-1].headers["If-None-Match"]


def test_canonical_duplicates_collapse_to_one_document(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/docs/a", "/print/a", "/b?ref=nav"])
    fake_web.html("/docs/a", "Policy A", "The real page.")
    fake_web.html("/print/a", "Policy A (print)", "The real page.", canonical="/docs/a")
    fake_web.html("/b", "B", "Plain.")
    fake_web.html(
        "/b?ref=nav",
        "B",
        "Plain.",
        headers={"Link": f'<{fake_web.url}/b>; rel="canonical"'},
    )
    fake_web.html("/c", "C", "Claims another site.", canonical="https://elsewhere.example/c")
    fake_web.pages["/"].body = html_page(
        "Home", "Start.", links=["/print/a", "/docs/a", "/b?ref=nav", "/c"]
    ).encode()
    found = docs(crawl(web_connector()))

    assert set(found) == ids(fake_web, "/", "/docs/a", "/b", "/c")
    a = found[f"site:{fake_web.url}/docs/a"]
    assert a.uri == f"{fake_web.url}/docs/a" and a.path == "/docs/a"
    assert "/docs/a" in fake_web.paths()  # the canonical itself was crawled too


def test_noindex_pages_are_not_indexed_and_are_deleted_when_they_become_noindex(
    fake_web, web_connector
):
    fake_web.html("/", "Home", "Start.", links=["/meta", "/header", "/other", "/later"])
    fake_web.html("/meta", "Meta", "Hidden.", robots="noindex", links=["/behind-meta"])
    fake_web.html("/behind-meta", "Behind", "Linked from a noindex page.")
    fake_web.html("/header", "Header", "Hidden.", headers={"X-Robots-Tag": "noindex"})
    fake_web.html(
        "/other", "Other", "For another bot.", headers={"X-Robots-Tag": "otherbot: noindex"}
    )
    fake_web.html("/later", "Later", "Indexed first.")
    connector = web_connector()
    first = crawl(connector)
    assert set(docs(first)) == ids(fake_web, "/", "/behind-meta", "/other", "/later")

    fake_web.html("/later", "Later", "Now hidden.", headers={"X-Robots-Tag": "trovebot: noindex"})
    second = crawl(connector, first[-1].cursor)
    assert f"site:{fake_web.url}/later" not in docs(second)
    assert second[-1].deleted == sorted(ids(fake_web, "/later"))


def test_gone_pages_are_deleted(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    first = crawl(connector)
    fake_web.gone("/docs/expenses")
    fake_web.fail("/about", 403, times=5)  # no longer public
    fake_web.fail("/docs/vacation", 500, times=5)  # an outage: the crawl is not complete
    second = crawl(connector, first[-1].cursor)
    assert not second[-1].complete
    # Explicit deletions still happen in an incomplete crawl; the 500 page is kept.
    assert set(second[-1].deleted) == ids(fake_web, "/docs/expenses", "/about")
    assert set(failures(second)) == ids(fake_web, "/docs/vacation")
    cursor_pages = json.loads(second[-1].cursor)["pages"]
    assert f"{fake_web.url}/about" not in cursor_pages
    assert f"{fake_web.url}/docs/expenses" not in cursor_pages
    assert f"{fake_web.url}/docs/vacation" in cursor_pages
    assert {s.doc_id for s in connector.list_ids()} == ids(fake_web, "/", "/docs/vacation")
    with pytest.raises(PageGone, match="401/403"):
        connector.fetch(f"site:{fake_web.url}/about")

    fake_web.remove("/about")
    third = crawl(connector, second[-1].cursor)
    assert third[-1].complete and set(docs(third)) == ids(fake_web, "/", "/docs/vacation")


def test_robots_5xx_means_nothing_is_fetched_and_nothing_is_deleted(
    fake_web, web_connector, sleeps
):
    fake_web.seed()
    connector = web_connector()
    first = crawl(connector)
    fake_web.robots(status=503)
    fake_web.requests.clear()
    second = crawl(connector, first[-1].cursor)

    assert fake_web.paths() == ["/robots.txt"] * 3  # retried (3 attempts), then gave up
    assert not docs(second)
    assert not second[-1].complete  # the pipeline must not delete the whole site
    (reason,) = failures(second).values()
    assert "robots.txt" in reason
    assert (
        json.loads(second[-1].cursor)["pages"].keys()
        == json.loads(first[-1].cursor)["pages"].keys()
    )
    assert "robots.txt" in connector.last_report.summary()


def test_robots_4xx_allows_everything(fake_web, web_connector):
    fake_web.seed()
    fake_web.robots(status=404)
    batches = crawl(web_connector())
    assert f"site:{fake_web.url}/private/salaries" in docs(batches)
    assert "/sitemap_index.xml" not in fake_web.paths()  # no robots, no Sitemap: line
    assert batches[-1].complete


def test_robots_redirects_are_followed_up_to_five_hops(fake_web, web_connector):
    fake_web.seed()
    fake_web.redirect("/robots.txt", "/policy/robots.txt")
    fake_web.page(
        "/policy/robots.txt", "User-agent: *\nDisallow: /about\n", content_type="text/plain"
    )
    batches = crawl(web_connector())
    assert f"site:{fake_web.url}/about" not in docs(batches)
    assert "/about" not in fake_web.paths()

    fake_web.reset()
    fake_web.seed()
    for n in range(6):  # /robots.txt -> /r0 -> ... -> /r5 -> a Disallow we never reach
        fake_web.redirect("/robots.txt" if n == 0 else f"/r{n - 1}", f"/r{n}")
    fake_web.page("/r5", "User-agent: *\nDisallow: /\n", content_type="text/plain")
    batches = crawl(web_connector())
    assert "/r5" not in fake_web.paths()  # gave up after five redirects: no rules, all allowed
    assert f"site:{fake_web.url}/private/salaries" in docs(batches)


def test_depth_limit(fake_web, web_connector):
    fake_web.html("/", "Root", "Depth 0.", links=["/d1"])
    fake_web.html("/d1", "D1", "Depth 1.", links=["/d2"])
    fake_web.html("/d2", "D2", "Depth 2.", links=["/d3"])
    fake_web.html("/d3", "D3", "Depth 3.")
    batches = crawl(web_connector(max_depth=2))
    assert set(docs(batches)) == ids(fake_web, "/", "/d1", "/d2")
    assert "/d3" not in fake_web.paths()
    assert batches[-1].complete  # a depth limit is scope, not a cut


def test_off_host_links_and_redirects_are_not_followed(fake_web, web_connector):
    fake_web.html(
        "/",
        "Home",
        "Start.",
        links=[f"{fake_web.other_host_url}/x", "/moved", "/away", "mailto:a@b.c", "/logo.png"],
    )
    fake_web.redirect("/moved", "/docs/new-home")
    fake_web.html("/docs/new-home", "New home", "Moved here.")
    fake_web.redirect("/away", f"{fake_web.other_host_url}/elsewhere")
    fake_web.html("/x", "X", "Off host.")
    fake_web.html("/elsewhere", "Elsewhere", "Off host.")
    batches = crawl(web_connector())
    assert set(docs(batches)) == ids(fake_web, "/", "/docs/new-home")
    assert not [r for r in fake_web.requests if r.host == "localhost"]
    assert "/logo.png" not in fake_web.paths()
    assert fake_web.paths().count("/docs/new-home") == 1  # reached via the redirect only once

    fake_web.requests.clear()
    widened = docs(crawl(web_connector(allowed_hosts=["localhost"])))
    assert f"site:{fake_web.other_host_url}/x" in widened
    assert f"site:{fake_web.other_host_url}/elsewhere" in widened


def test_retry_after_is_honoured(fake_web, web_connector, sleeps):
    fake_web.html("/", "Home", "Start.", links=["/busy"])
    fake_web.html("/busy", "Busy", "Throttled once.")
    fake_web.fail("/busy", 429, retry_after="7")
    batches = crawl(web_connector())
    assert f"site:{fake_web.url}/busy" in docs(batches)
    assert 7.0 in sleeps
    assert fake_web.paths().count("/busy") == 2


def test_a_page_failing_with_5xx_is_a_failure_and_the_crawl_is_incomplete(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    first = crawl(connector)
    fake_web.fail("/about", 500, times=10)
    second = crawl(connector, first[-1].cursor)
    found = failures(second)
    assert list(found) == [f"site:{fake_web.url}/about"]
    assert "500" in found[f"site:{fake_web.url}/about"]
    assert set(docs(second)) == ids(fake_web, "/", "/docs/vacation", "/docs/expenses")
    assert not second[-1].complete  # /about may still exist: no pruning
    assert f"{fake_web.url}/about" in json.loads(second[-1].cursor)["pages"]  # state kept


def test_max_pages_cut_is_not_complete_and_list_ids_keeps_what_it_missed(fake_web, web_connector):
    fake_web.seed()
    full = crawl(web_connector())
    connector = web_connector(max_pages=2)
    batches = crawl(connector, full[-1].cursor)
    assert len(docs(batches)) == 2
    assert not batches[-1].complete
    assert connector.last_report.truncated
    assert "max_pages" in connector.last_report.summary()
    # The pipeline then asks list_ids: pages known from before are still listed.
    fake_web.requests.clear()
    stamps = {s.doc_id: s for s in connector.list_ids()}
    assert set(stamps) == set(docs(full)) and fake_web.requests == []
    assert all(stamps[i].version == d.version for i, d in docs(full).items())
    assert (
        json.loads(batches[-1].cursor)["pages"].keys()
        == json.loads(full[-1].cursor)["pages"].keys()
    )
    # With no crawl to go on, list_ids crawls, and refuses to answer from a cut crawl.
    with pytest.raises(CrawlIncomplete, match="max_pages"):
        list(web_connector(max_pages=2).list_ids())


def test_list_ids_after_a_complete_crawl_and_without_one(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    found = docs(crawl(connector))
    stamps = {s.doc_id: s for s in connector.list_ids()}
    assert set(stamps) == set(found)
    assert all(stamps[i].version == found[i].version and stamps[i].acl.public for i in stamps)
    assert stamps[f"site:{fake_web.url}/docs/vacation"].path == "/docs/vacation"
    fresh = {s.doc_id: s.version for s in web_connector().list_ids()}  # crawls itself
    assert fresh == {i: d.version for i, d in found.items()}


def test_ssrf_guard_refuses_loopback_unless_allowed(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector(allow_private_addresses=False)
    with pytest.raises(BlockedAddress) as info:
        crawl(connector)
    assert "127.0.0.1" in str(info.value) and "allow_private_addresses" in str(info.value)
    assert fake_web.requests == []


def test_batches_carry_resumable_cursors(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector(batch_size=2)
    batches = crawl(connector)
    assert [len(b.documents) for b in batches] == [2, 2, 0]
    assert [b.complete for b in batches] == [False, False, True]
    # A run that died after the first batch restarts from the top; what it had fetched is 304.
    fake_web.requests.clear()
    resumed = crawl(connector, batches[0].cursor)
    assert set(docs(resumed)) == ids(fake_web, *SEEDED)
    validated = {r.path for r in fake_web.requests if "If-None-Match" in r.headers}
    assert validated == {"/", "/docs/vacation"}


def test_document_types_and_non_documents(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/report.pdf", "/data", "/notes.txt", "/feed"])
    fake_web.page("/report.pdf", b"%PDF-1.4 fake", content_type="application/pdf")
    fake_web.page("/data", b"\x89PNG....", content_type="image/png")
    fake_web.page("/notes.txt", "plain notes", content_type="application/octet-stream")
    fake_web.page("/feed", "<rss/>", content_type="application/rss+xml")
    batches = crawl(web_connector())
    found = docs(batches)
    assert set(found) == ids(fake_web, "/", "/report.pdf", "/notes.txt")
    assert found[f"site:{fake_web.url}/report.pdf"].doc_type == "pdf"
    assert found[f"site:{fake_web.url}/notes.txt"].doc_type == "txt"
    assert not failures(batches) and batches[-1].complete


def test_oversized_bodies_are_failures(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/big"])
    fake_web.page("/big", "x" * 5000, content_type="text/plain")
    batches = crawl(web_connector(limits={"max_bytes": 2048}))
    assert "larger than 2048 bytes" in failures(batches)[f"site:{fake_web.url}/big"]
    assert batches[-1].complete  # lasting, not transient


def test_robots_crawl_delay_and_request_delay(fake_web, web_connector, sleeps):
    fake_web.seed()
    fake_web.robots("User-agent: trovebot\nCrawl-delay: 3\nDisallow: /private/\n")
    crawl(web_connector(request_delay_s=0.5))
    page_requests = len(fake_web.paths()) - 1  # all but robots.txt
    assert sleeps.count(3.0) == page_requests - 1  # before each but the first


def test_fetch_reads_a_page_now(fake_web, web_connector):
    fake_web.seed()
    connector = web_connector()
    doc_id = f"site:{fake_web.url}/docs/vacation"
    doc = connector.fetch(doc_id)
    assert doc.doc_id == doc_id and doc.content == fake_web.pages["/docs/vacation"].body
    assert "If-None-Match" not in fake_web.requested("/docs/vacation")[-1].headers
    fake_web.gone("/docs/vacation")
    with pytest.raises(PageGone, match="410"):
        connector.fetch(doc_id)
    with pytest.raises(PageNotIndexable, match="robots"):
        connector.fetch(f"site:{fake_web.url}/private/salaries")
    with pytest.raises(ConnectorError, match="outside"):
        connector.fetch(f"site:{fake_web.other_host_url}/offsite")
    with pytest.raises(ConnectorError, match="not a document of source"):
        connector.fetch("other:http://x/")
    fake_web.robots(status=500)
    with pytest.raises(ConnectorError, match=r"robots\.txt unreachable") as info:
        connector.fetch(f"site:{fake_web.url}/about")
    assert not isinstance(info.value, PageNotIndexable)


def test_acl_rules_override_the_public_default(fake_web, web_connector):
    fake_web.seed()
    source = make_source_config(
        fake_web, "site", acl_rules=[{"match": "/docs/**", "allow_groups": ["staff"]}]
    )
    connector = web_connector(source=source)
    policy = AclPolicy.from_config(SourceConfig.model_validate(source).acl)
    found = docs(crawl(connector))
    anyone, staff = Principal.of("x@example.com"), Principal.of("s@example.com", ["staff"])
    vacation = policy.acl_for(found[f"site:{fake_web.url}/docs/vacation"])
    about = policy.acl_for(found[f"site:{fake_web.url}/about"])
    assert vacation.permits(staff) and not vacation.permits(anyone)
    assert about.permits(anyone)


def test_private_sites_carry_no_native_acl(fake_web, web_connector):
    fake_web.seed()
    found = docs(crawl(web_connector(public=False)))
    assert found and not any(d.acl.grants_anyone for d in found.values())


def test_make_source_config_is_a_valid_source(fake_web, tmp_path):
    source = SourceConfig.model_validate(make_source_config(fake_web, "intranet", tmp_path))
    assert source.type == "web" and source.web.start_urls == [f"{fake_web.url}/"]
    assert source.web.allow_private_addresses
