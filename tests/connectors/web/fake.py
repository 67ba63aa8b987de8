"""A stateful fake website on 127.0.0.1 (pytest-httpserver), for the web connector.

Usage from any test (the end-to-end test included)::

    fake = FakeWeb()
    fake.start()
    fake.seed()                      # robots + sitemap index -> gzipped urlset + linked pages
    source = make_source_config(fake, "intranet", tmp_path)
    ...
    fake.edit("/docs/vacation", "New text")      # new body, new ETag
    fake.gone("/docs/expenses")                  # 410
    fake.stop()

Every page answers conditional GETs like a real server: ``If-None-Match``
matching its ETag, or ``If-Modified-Since`` not older than its Last-Modified,
gives 304. ``requests`` records method, path and headers of everything asked,
so tests can assert what was (not) fetched and which validators were sent.
Failures are injected per path (``fail``: status, count, ``Retry-After``).

The site is served as ``http://127.0.0.1:{port}``; ``http://localhost:{port}``
reaches the same server under another host name, which makes "off-host" links
observable (they must never be requested).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

EPOCH = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


@dataclass
class FakePage:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    etag: str | None = None  # None: derived from the body; "" : no ETag header
    last_modified: datetime | None = EPOCH
    headers: dict[str, str] = field(default_factory=dict)
    location: str | None = None  # redirects


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    host: str


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: str | None = None


def html_page(
    title: str,
    text: str = "",
    *,
    links: list[str] | tuple[str, ...] = (),
    canonical: str | None = None,
    robots: str | None = None,
) -> str:
    """A small but real HTML page."""
    head = [f"<title>{html.escape(title)}</title>"]
    if canonical:
        head.append(f'<link rel="canonical" href="{html.escape(canonical)}">')
    if robots:
        head.append(f'<meta name="robots" content="{html.escape(robots)}">')
    nav = "".join(f'<li><a href="{html.escape(u)}">{html.escape(u)}</a></li>' for u in links)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        + "".join(head)
        + f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        + (f"<ul>{nav}</ul>" if nav else "")
        + "</body></html>"
    )


def urlset(urls: list[str]) -> bytes:
    entries = "".join(f"<url><loc>{html.escape(u)}</loc></url>" for u in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
    ).encode()


def sitemap_index(urls: list[str]) -> bytes:
    entries = "".join(f"<sitemap><loc>{html.escape(u)}</loc></sitemap>" for u in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}'
        "</sitemapindex>"
    ).encode()


class FakeWeb:
    """A website whose pages, robots.txt and sitemaps can be changed between crawls."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0)
        self.pages: dict[str, FakePage] = {}
        self.requests: list[SeenRequest] = []
        self._failures: dict[str, _Failure] = {}
        self.url = ""
        self.other_host_url = ""

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeWeb:
        self.server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._respond)
        self.server.start()
        port = self.server.port
        self.url = f"http://127.0.0.1:{port}"
        self.other_host_url = f"http://localhost:{port}"
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()

    def reset(self) -> None:
        self.pages.clear()
        self.requests.clear()
        self._failures.clear()

    # -- content ------------------------------------------------------------------

    def page(self, path: str, body: str | bytes, **kwargs: Any) -> FakePage:
        data = body.encode() if isinstance(body, str) else body
        page = FakePage(body=data, **kwargs)
        self.pages[path] = page
        return page

    def html(self, path: str, title: str, text: str = "", **kwargs: Any) -> FakePage:
        """An HTML page; ``links``, ``canonical`` and ``robots`` go into the markup."""
        markup = {k: kwargs.pop(k) for k in ("links", "canonical", "robots") if k in kwargs}
        return self.page(path, html_page(title, text, **markup), **kwargs)

    def edit(self, path: str, text: str, **kwargs: Any) -> None:
        """New content for an HTML page (keeps its title and links unless given)."""
        old = self.pages[path]
        title = re.search(rb"<title>(.*?)</title>", old.body)
        links = re.findall(rb'<a href="([^"]*)"', old.body)
        self.html(
            path,
            kwargs.pop("title", html.unescape(title.group(1).decode()) if title else path),
            text,
            links=kwargs.pop("links", [html.unescape(x.decode()) for x in links]),
            last_modified=kwargs.pop("last_modified", datetime.now(UTC).replace(microsecond=0)),
            **kwargs,
        )

    def rotate_etag(self, path: str) -> None:
        """Same bytes, new ETag and date (a redeploy): the version must not change."""
        page = self.pages[path]
        page.etag = hashlib.sha1(page.body + b"redeploy").hexdigest()
        page.last_modified = datetime.now(UTC).replace(microsecond=0)

    def remove(self, path: str) -> None:
        self.pages[path] = FakePage(b"not found", "text/plain", status=404, etag="")

    def gone(self, path: str) -> None:
        self.pages[path] = FakePage(b"gone", "text/plain", status=410, etag="")

    def redirect(self, path: str, to: str, status: int = 301) -> None:
        self.pages[path] = FakePage(b"", "text/plain", status=status, etag="", location=to)

    def robots(self, text: str | None = None, *, status: int = 200) -> None:
        """robots.txt content, or a bare status (404: no rules, 503: unreachable)."""
        self.pages["/robots.txt"] = FakePage(
            (text or "").encode(), "text/plain", status=status, last_modified=None, etag=""
        )

    def sitemap(self, path: str, urls: list[str], *, index: bool = False) -> None:
        """A urlset (or a sitemap index); a path ending ``.gz`` is served gzipped."""
        data = sitemap_index(urls) if index else urlset(urls)
        if path.endswith(".gz"):
            self.page(path, gzip.compress(data), content_type="application/gzip", etag="")
        else:
            self.page(path, data, content_type="application/xml", etag="")

    def fail(
        self, path: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """The next ``times`` requests for ``path`` answer ``status`` (with ``Retry-After``)."""
        self._failures[path] = _Failure(status, times, retry_after)

    def seed(self) -> None:
        """A small intranet-like site exercising robots, sitemaps and links."""
        self.robots(
            "User-agent: *\nDisallow: /private/\n\nUser-agent: otherbot\nDisallow: /\n\n"
            f"Sitemap: {self.url}/sitemap_index.xml\n"
        )
        self.sitemap("/sitemap_index.xml", [f"{self.url}/sitemaps/docs.xml.gz"], index=True)
        self.sitemap(
            "/sitemaps/docs.xml.gz", [f"{self.url}/docs/vacation", f"{self.url}/docs/expenses"]
        )
        self.html(
            "/",
            "Acme intranet",
            "Welcome to the Acme intranet. Policies and guides live here.",
            links=[
                "/about",
                "/docs/vacation",
                "/private/salaries",
                f"{self.other_host_url}/offsite",
            ],
        )
        self.html("/about", "About Acme", "Acme makes anvils since 1949.", links=["/"])
        self.html(
            "/docs/vacation",
            "Vacation policy",
            "Employees get 25 days of paid vacation per year; carry over up to 5 days.",
            links=["/docs/expenses"],
        )
        self.html(
            "/docs/expenses",
            "Expense policy",
            "Submit expenses within 30 days with receipts attached.",
        )
        self.html(
            "/private/salaries", "Salaries", "Never crawl me: robots.txt disallows /private/."
        )
        self.html("/offsite", "Off-site", "Reached only under another host name: never crawled.")

    # -- observation --------------------------------------------------------------

    def requested(self, path: str | None = None) -> list[SeenRequest]:
        return [r for r in self.requests if path is None or r.path == path]

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- the handler --------------------------------------------------------------

    def _respond(self, request: Request) -> Response:
        path = request.full_path.rstrip("?") if request.query_string else request.path
        host = (request.headers.get("Host") or "").split(":")[0]
        self.requests.append(SeenRequest(request.method, path, dict(request.headers), host))
        failure = self._failures.get(path)
        if failure is not None and failure.times > 0:
            failure.times -= 1
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return Response(f"failure {failure.status}", status=failure.status, headers=headers)
        page = self.pages.get(path)
        if page is None:
            return Response("not found", status=404, content_type="text/plain")
        headers = dict(page.headers)
        if page.location is not None:
            headers["Location"] = page.location
            return Response("", status=page.status, headers=headers)
        if page.status != 200:
            return Response(page.body, status=page.status, content_type=page.content_type)
        etag = page.etag if page.etag is not None else hashlib.sha1(page.body).hexdigest()
        if etag:
            headers["ETag"] = f'"{etag}"'
        if page.last_modified is not None:
            headers["Last-Modified"] = format_datetime(page.last_modified, usegmt=True)
        if self._not_modified(request, etag, page.last_modified):
            return Response(status=304, headers=headers)
        return Response(page.body, status=200, content_type=page.content_type, headers=headers)

    @staticmethod
    def _not_modified(request: Request, etag: str, last_modified: datetime | None) -> bool:
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            return bool(etag) and f'"{etag}"' in [t.strip() for t in if_none_match.split(",")]
        since = request.headers.get("If-Modified-Since")
        if since and last_modified is not None:
            try:
                return last_modified <= parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
        return False


def make_source_config(
    fake: FakeWeb,
    name: str,
    tmp_path: Path | None = None,
    *,
    acl_rules: list[dict[str, Any]] | None = None,
    **web: Any,
) -> dict[str, Any]:
    """A ``type: web`` source block for ``fake`` (loopback allowed; no credentials needed).

    ``tmp_path`` is accepted for symmetry with the other fakes (nothing is written).
    ``acl_rules`` (globs on the URL path) replace the pages' public native ACL where
    they match; e.g. ``[{"match": "/docs/**", "allow_groups": ["staff"]}]``.
    """
    block: dict[str, Any] = {
        "start_urls": [f"{fake.url}/"],
        "allow_private_addresses": True,
        "user_agent": "TroveBot/0.1 (+https://example.invalid/bot)",
        "max_pages": 200,
        "max_depth": 5,
        "timeout_s": 5,
    }
    block.update(web)
    source: dict[str, Any] = {
        "name": name,
        "type": "web",
        "web": block,
        "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 30, "max_total_s": 60},
    }
    if acl_rules:
        source["acl"] = {"rules": acl_rules}
    return source
