"""The web connector's pure parts: URLs, SSRF guard, sitemaps, page directives, cursor."""

from __future__ import annotations

import gzip
import socket

import httpx
import pytest

from connectors.web.fetch import BodyTooLarge, install_body_cap
from connectors.web.guard import AddressGuard, BlockedAddress, HostUnresolvable, is_public
from connectors.web.page import header_canonical, header_directives, parse_html
from connectors.web.sitemap import SitemapError, parse_sitemap
from connectors.web.state import PageState, dump_state, load_state
from connectors.web.urls import normalise
from tests.connectors.web.fake import sitemap_index, urlset


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("HTTP://Example.COM:80/a/./b/../c#frag", None, "http://example.com/a/c"),
        ("https://example.com:443", None, "https://example.com/"),
        ("https://example.com:8443/x?b=2&a=1", None, "https://example.com:8443/x?b=2&a=1"),
        ("../up", "http://h.example/a/b/c", "http://h.example/a/up"),
        ("/p q", "http://h.example/", "http://h.example/p%20q"),
        ("//other.example/x", "https://h.example/", "https://other.example/x"),
        ("http://user:pw@h.example/x", None, "http://h.example/x"),
        ("mailto:a@b.c", None, None),
        ("javascript:alert(1)", "http://h.example/", None),
        ("ftp://h.example/file", None, None),
        ("http://[::1]:8080/x", None, "http://[::1]:8080/x"),
        ("http://h.example:99999/", None, None),
        ("", None, None),
    ],
)
def test_normalise(url, base, expected):
    assert normalise(url, base) == expected


def fake_resolver(table):
    def resolve(host, port, family=0, type=0, *_):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in table[host]]

    return resolve


def test_guard_refuses_non_public_addresses_and_caches_per_host():
    calls = []
    table = {
        "public.example": ["93.184.216.34"],
        "intranet.example": ["10.0.0.5"],
        "mixed.example": ["93.184.216.34", "192.168.1.9"],
        "shared.example": ["100.64.1.1"],
    }
    resolver = fake_resolver(table)

    def counting(host, *args):
        calls.append(host)
        return resolver(host, *args)

    guard = AddressGuard(resolve=counting)
    guard.check("https://public.example/a")
    guard.check("https://public.example/b")
    assert calls == ["public.example"]
    for url in (
        "http://intranet.example/",
        "http://mixed.example/",  # one private address is enough to refuse
        "http://shared.example/",
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
    ):
        with pytest.raises(BlockedAddress, match="allow_private_addresses"):
            guard.check(url)
    with pytest.raises(HostUnresolvable):
        guard.check("http://nowhere.example/")
    AddressGuard(allow_private=True, resolve=counting).check("http://intranet.example/")


def test_is_public():
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111")
    assert not is_public("fe80::1%eth0") and not is_public("224.0.0.1")


def test_sitemaps_plain_gzipped_and_index():
    pages = parse_sitemap(urlset(["https://h.example/a", "https://h.example/b"]))
    assert pages.kind == "urlset" and pages.locs == ("https://h.example/a", "https://h.example/b")
    zipped = parse_sitemap(gzip.compress(urlset(["https://h.example/z"])))
    assert zipped.locs == ("https://h.example/z",)
    index = parse_sitemap(sitemap_index(["https://h.example/s1.xml.gz"]))
    assert index.kind == "sitemapindex" and index.locs == ("https://h.example/s1.xml.gz",)


def test_sitemaps_refuse_entities_and_junk():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]><urlset><url><loc>&lol2;</loc></url></urlset>'
    )
    with pytest.raises(SitemapError, match="unsafe"):
        parse_sitemap(bomb)
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<urlset><url><loc>&e;</loc></url></urlset>"
    )
    with pytest.raises(SitemapError, match="unsafe"):
        parse_sitemap(xxe)
    with pytest.raises(SitemapError, match="neither"):
        parse_sitemap(b"<rss><channel/></rss>")
    with pytest.raises(SitemapError, match="not XML"):
        parse_sitemap(b"<html><body>oops")
    with pytest.raises(SitemapError, match="gzip"):
        parse_sitemap(b"\x1f\x8bnot really gzip")


def test_page_parsing():
    body = b"""<html><head><title> Two
    words </title><base href="/docs/"><link rel="canonical" href="/docs/main">
    <meta name="TroveBot" content="noindex"><meta name="robots" content="nofollow"></head>
    <body><a href="a">A</a><a rel="nofollow sponsored" href="/ad">Ad</a>
    <area href="/map"></body></html>"""
    info = parse_html(body, None, ("robots", "trovebot"))
    assert info.title == "Two words"
    assert info.links == ["a", "/map"] and info.base == "/docs/"
    assert info.canonical == "/docs/main"
    assert info.robots.noindex and info.robots.nofollow
    assert parse_html("<title>café</title>".encode("latin-1"), "latin-1", ()).title == "café"


def test_header_directives_and_link_canonical():
    assert header_directives(["noindex, nofollow"], ["trovebot"]).noindex
    assert header_directives(["none"], ["trovebot"]).nofollow
    assert header_directives(["trovebot: noindex"], ["trovebot"]).noindex
    assert not header_directives(["googlebot: noindex"], ["trovebot"]).noindex
    assert not header_directives(["unavailable_after: 25 Jun 2030 15:00:00 PST"], ["x"]).noindex
    link = '<https://h.example/x.css>; rel="preload", <https://h.example/main>; rel="canonical"'
    assert header_canonical([link]) == "https://h.example/main"
    assert header_canonical(['<https://h.example/n>; rel="next"']) is None


def test_cursor_round_trip_interns_links():
    nav = tuple(f"https://h.example/section/{n}" for n in range(20))
    pages = {
        f"https://h.example/p{n}": PageState(
            doc_id=f"site:https://h.example/p{n}",
            version=f"sha256:{n}",
            etag=f'"e{n}"',
            last_modified="Mon, 05 Jan 2026 09:00:00 GMT",
            title=f"Page {n}",
            doc_type="html",
            size=100 + n,
            links=nav,
        )
        for n in range(30)
    }
    pages["https://h.example/noval"] = PageState(doc_id=None, links=nav)  # no validator: no links
    cursor = dump_state(pages)
    assert cursor.count("section/7") == 1  # each link target stored once
    back = load_state(cursor)
    assert back["https://h.example/p3"] == pages["https://h.example/p3"]
    assert back["https://h.example/noval"].links == ()
    assert back["https://h.example/p3"].conditional_headers() == {
        "If-None-Match": '"e3"',
        "If-Modified-Since": "Mon, 05 Jan 2026 09:00:00 GMT",
    }
    assert load_state("not json") == {} and load_state('{"v": 99}') == {} and load_state(None) == {}


def test_body_cap_stops_a_chunked_body_while_it_streams():
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/small":
            return httpx.Response(200, content=b"ok")
        return httpx.Response(200, content=chunks())  # no Content-Length: chunked

    client = httpx.Client(transport=httpx.MockTransport(handler))
    install_body_cap(client, 5_000)
    install_body_cap(client, 5_000)  # idempotent: one hook, not two
    assert len(client.event_hooks["response"]) == 1
    assert client.get("http://h.example/small").content == b"ok"
    with pytest.raises(BodyTooLarge, match="5000"):
        client.get("http://h.example/big")
    assert len(sent) < 10  # stopped early, not after reading all 100 KB
