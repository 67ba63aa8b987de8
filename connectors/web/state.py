"""The web cursor: what the last crawl learned about each URL, as compact JSON.

Per fetched URL (the one that answered, after redirects)::

    {"e": ETag, "m": Last-Modified,          # validators for If-None-Match / If-Modified-Since
     "id": doc id or null,                   # the document this URL produced (null: noindex,
                                             #   not a document type, or a duplicate)
     "ver": "sha256:…", "t": title, "dt": doc type, "n": size, "mod": ISO time,
     "ni": noindex, "nf": nofollow,
     "c": canonical URL,                     # set when the page is a duplicate of it
     "l": [indexes into "urls"]}            # outgoing links, kept only when a validator
                                             #   exists (a 304 has no body to read them from)

The whole cursor is ``{"v": 1, "urls": [...], "pages": {url: entry}}``; link
targets are interned in ``urls`` so a site whose pages share navigation links
stays small. A 304 reuses the entry's version, title and links, so the pipeline
sees the same stamp and classifies the page unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.common import UnreadableCursor, dump_cursor, load_cursor

CURSOR_VERSION = 1


@dataclass(frozen=True)
class PageState:
    doc_id: str | None
    version: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    title: str = ""
    doc_type: str = ""
    size: int = 0
    modified_at: str | None = None
    noindex: bool = False
    nofollow: bool = False
    links: tuple[str, ...] = field(default_factory=tuple)
    # The canonical this page is a duplicate of (same scope, same ACL); None: its own page.
    canonical: str | None = None

    @property
    def has_validators(self) -> bool:
        return bool(self.etag or self.last_modified)

    def conditional_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def dump_state(pages: dict[str, PageState]) -> str:
    urls: list[str] = []
    index: dict[str, int] = {}

    def intern(url: str) -> int:
        if url not in index:
            index[url] = len(urls)
            urls.append(url)
        return index[url]

    out: dict[str, dict[str, Any]] = {}
    for url in sorted(pages):
        page = pages[url]
        entry: dict[str, Any] = {"id": page.doc_id}
        optional = {
            "ver": page.version,
            "e": page.etag,
            "m": page.last_modified,
            "t": page.title,
            "dt": page.doc_type,
            "n": page.size,
            "mod": page.modified_at,
            "ni": page.noindex,
            "nf": page.nofollow,
            "c": page.canonical,
        }
        entry.update({k: v for k, v in optional.items() if v})
        if page.links and page.has_validators:
            entry["l"] = [intern(link) for link in page.links]
        out[url] = entry
    return dump_cursor({"urls": urls, "pages": out}, version=CURSOR_VERSION)


def load_state(cursor: str | None) -> dict[str, PageState]:
    """The per-URL state in ``cursor``; an empty map for ``None`` or an unreadable cursor."""
    if not cursor:
        return {}
    try:
        data = load_cursor(cursor, version=CURSOR_VERSION)
    except UnreadableCursor:
        return {}
    urls = data.get("urls") or []
    pages: dict[str, PageState] = {}
    for url, entry in (data.get("pages") or {}).items():
        if not isinstance(entry, dict):
            continue
        try:
            links = tuple(urls[i] for i in entry.get("l") or ())
            pages[url] = PageState(
                doc_id=entry.get("id"),
                version=entry.get("ver"),
                etag=entry.get("e"),
                last_modified=entry.get("m"),
                title=entry.get("t") or "",
                doc_type=entry.get("dt") or "",
                size=int(entry.get("n") or 0),
                modified_at=entry.get("mod"),
                noindex=bool(entry.get("ni")),
                nofollow=bool(entry.get("nf")),
                links=links,
                canonical=entry.get("c") if isinstance(entry.get("c"), str) else None,
            )
        except (IndexError, TypeError, ValueError):
            continue  # one damaged entry costs one unconditional GET, nothing more
    return pages
