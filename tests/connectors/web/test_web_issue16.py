"""Regression tests for issue 16, items 3 and 6, each the issue's own reproducer.

They use only what the web connector offered before the fix (``normalise``,
``is_public``, ``AddressGuard``, the connector against the fake site), so each
one can be run against the old code and seen to fail there.
"""

from __future__ import annotations

import socket

import pytest

from connectors.web.guard import AddressGuard, BlockedAddress, is_public
from connectors.web.urls import normalise
from core.acl import Acl, Principal
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from tests.connectors.web.fake import make_source_config

BOARD_ONLY = [{"match": "/internal/**", "allow_groups": ["board"]}]
ANYONE = Principal.of("someone@example.com")
BOARD = Principal.of("chair@example.com", ["board"])


def crawl_docs(connector) -> dict:
    return {d.doc_id: d for batch in connector.changes(None) for d in batch.documents}


def policy_of(source: dict) -> AclPolicy:
    return AclPolicy.from_config(SourceConfig.model_validate(source).acl)


# -- item 3: the URL chooses its own permissions ------------------------------------


def test_a_percent_encoded_path_gets_the_rule_of_the_path_it_names(fake_web, web_connector):
    fake_web.html("/", "Home", "Public.", links=["/%69nternal/layoffs.html"])
    fake_web.html("/internal/layoffs.html", "Layoffs", "Board only.")  # the server decodes %69
    source = make_source_config(fake_web, "site", acl_rules=BOARD_ONLY)
    found = crawl_docs(web_connector(source=source))

    doc = found[f"site:{fake_web.url}/internal/layoffs.html"]
    acl = policy_of(source).acl_for(doc)
    assert doc.path == "/internal/layoffs.html"
    assert acl.permits(BOARD) and not acl.permits(ANYONE)
    assert not any("%69" in doc_id for doc_id in found)


def test_an_encoded_dot_dot_cannot_step_out_of_a_rule(fake_web, web_connector):
    fake_web.html("/", "Home", "Public.", links=["/public/%2e%2e/internal/plan.html"])
    fake_web.html("/internal/plan.html", "Plan", "Board only.")
    # The fake server decodes the path and, like some servers, serves it without
    # removing the dot segments.
    fake_web.html("/public/../internal/plan.html", "Plan", "Board only.")
    source = make_source_config(fake_web, "site", acl_rules=BOARD_ONLY)
    found = crawl_docs(web_connector(source=source))
    policy = policy_of(source)
    plans = [doc for doc in found.values() if doc.content and b"Board only" in doc.content]
    assert plans, "the plan was not crawled at all"
    assert not any(policy.acl_for(doc).permits(ANYONE) for doc in plans)


def test_a_restricted_page_keeps_its_permissions_whatever_canonical_it_declares(
    fake_web, web_connector
):
    fake_web.html("/", "Home", "Public.", links=["/internal/merger.html"])
    fake_web.html("/internal/merger.html", "Merger", "Board only.", canonical="/public/merger.html")
    fake_web.html("/public/merger.html", "Press release", "Public.")
    source = make_source_config(fake_web, "site", acl_rules=BOARD_ONLY)
    found = crawl_docs(web_connector(source=source))
    policy = policy_of(source)

    for doc in found.values():
        if doc.content and b"Board only" in doc.content:
            assert not policy.acl_for(doc).permits(ANYONE), doc.doc_id
    merger = found[f"site:{fake_web.url}/internal/merger.html"]
    assert merger.path == "/internal/merger.html" and merger.uri.endswith("/internal/merger.html")


def test_a_public_page_cannot_take_a_restricted_pages_id(fake_web, web_connector):
    fake_web.html("/", "Home", "Public.", links=["/public/teaser.html", "/internal/merger.html"])
    fake_web.html(
        "/public/teaser.html", "Teaser", "Public teaser.", canonical="/internal/merger.html"
    )
    fake_web.html("/internal/merger.html", "Merger", "Board only.")
    source = make_source_config(fake_web, "site", acl_rules=BOARD_ONLY)
    found = crawl_docs(web_connector(source=source))
    policy = policy_of(source)

    merger = found[f"site:{fake_web.url}/internal/merger.html"]
    assert b"Board only" in merger.content
    assert not policy.acl_for(merger).permits(ANYONE)
    teaser = found[f"site:{fake_web.url}/public/teaser.html"]
    assert policy.acl_for(teaser).permits(ANYONE) and b"Public teaser" in teaser.content


# -- item 6: the SSRF guard -------------------------------------------------------------


def getaddrinfo_like(table: dict[str, list[str]]):
    """A resolver that, like ``socket.getaddrinfo``, IDNA-2003-encodes a non-ASCII name."""

    def resolve(host, port, family=0, type=0, *_):
        name = host.encode("idna").decode("ascii") if not host.isascii() else host
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in table[name]]

    return resolve


def test_the_guard_checks_the_host_the_client_connects_to():
    # IDNA 2003 maps faß.example to fass.example; httpx (IDNA 2008) connects to xn--fa-hia.
    table = {"fass.example": ["93.184.216.34"], "xn--fa-hia.example": ["127.0.0.1"]}
    guard = AddressGuard(resolve=getaddrinfo_like(table))
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
        guard.check("http://faß.example/")
    assert normalise("http://faß.example/x") == "http://xn--fa-hia.example/x"


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local
        "192.0.0.8",  # IETF protocol assignments
    ],
)
def test_ipv6_forms_of_internal_addresses_are_not_public(address):
    assert not is_public(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_stay_public(address):
    assert is_public(address)


def test_sitemap_lines_in_robots_txt_never_leave_the_allowed_hosts(fake_web, web_connector):
    fake_web.robots(f"User-agent: *\nDisallow:\nSitemap: {fake_web.other_host_url}/sitemap.xml\n")
    fake_web.sitemap("/sitemap.xml", [f"{fake_web.url}/from-sitemap"])
    fake_web.html("/", "Home", "Start.")
    fake_web.html("/from-sitemap", "Listed", "Only in the off-host sitemap.")
    batches = list(web_connector().changes(None))
    assert not [r for r in fake_web.requests if r.host == "localhost"]
    assert batches[-1].complete  # an off-host sitemap is out of scope, not an error


def test_robots_and_sitemap_redirects_never_leave_the_allowed_hosts(fake_web, web_connector):
    fake_web.redirect("/robots.txt", f"{fake_web.other_host_url}/robots-elsewhere.txt")
    fake_web.page(
        "/robots-elsewhere.txt", "User-agent: *\nDisallow: /\n", content_type="text/plain"
    )
    fake_web.redirect("/sitemap.xml", f"{fake_web.other_host_url}/sitemap-elsewhere.xml")
    fake_web.sitemap("/sitemap-elsewhere.xml", [f"{fake_web.url}/listed"])
    fake_web.html("/", "Home", "Start.")
    fake_web.html("/listed", "Listed", "Listed in the redirected sitemap.")
    connector = web_connector(sitemaps=[f"{fake_web.url}/sitemap.xml"])
    batches = list(connector.changes(None))
    assert not [r for r in fake_web.requests if r.host == "localhost"]
    # Rules that could not be read let nothing in, and the run says why (and deletes nothing).
    assert "/" not in fake_web.paths() and not batches[-1].complete
    assert "robots.txt redirects" in connector.last_report.summary()
    assert "sitemap redirects" in connector.last_report.summary()


def test_plain_public_paths_stay_public(fake_web, web_connector):
    """Control for the tests above: a path no rule names keeps the public native ACL."""
    fake_web.html("/", "Home", "Public.", links=["/docs/a.html"])
    fake_web.html("/docs/a.html", "A", "Public.")
    source = make_source_config(fake_web, "site", acl_rules=BOARD_ONLY)
    found = crawl_docs(web_connector(source=source))
    acl = policy_of(source).acl_for(found[f"site:{fake_web.url}/docs/a.html"])
    assert acl == Acl.public_acl()
