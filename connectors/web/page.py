"""What the crawler reads from an HTML page and its headers: title, links, canonical, robots.

* Links: ``<a href>`` and ``<area href>`` (``rel="nofollow"`` ones are not
  followed), resolved against ``<base href>`` or the page URL.
* Canonical: ``<link rel="canonical" href>`` or a ``Link: <…>; rel="canonical"``
  header (the header wins, as it is set by the server, not the page body).
* Robots directives: ``<meta name="robots">`` and ``<meta name="{our bot}">``
  contents, and ``X-Robots-Tag`` headers, which may name a bot
  (``otherbot: noindex`` does not apply to us). ``none`` = noindex + nofollow.

Parsing uses the standard library's tolerant ``html.parser``: no scripts run,
no network, nothing but attributes and the title are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser

_WS = re.compile(r"\s+")
_LINK_ENTRY = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


@dataclass
class Directives:
    noindex: bool = False
    nofollow: bool = False

    def add(self, content: str) -> None:
        for token in (t.strip().lower() for t in content.split(",")):
            if token in ("noindex", "none"):
                self.noindex = True
            if token in ("nofollow", "none"):
                self.nofollow = True


@dataclass
class PageInfo:
    title: str = ""
    links: list[str] = field(default_factory=list)  # raw hrefs, resolved later
    base: str | None = None
    canonical: str | None = None
    robots: Directives = field(default_factory=Directives)


class _Parser(HTMLParser):
    def __init__(self, robot_names: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.info = PageInfo()
        self._robot_names = robot_names
        self._in_title = False
        self._title: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        rel = {r.lower() for r in a.get("rel", "").split()}
        if tag in ("a", "area") and a.get("href") and "nofollow" not in rel:
            self.info.links.append(a["href"])
        elif tag == "link" and "canonical" in rel and a.get("href"):
            self.info.canonical = self.info.canonical or a["href"].strip()
        elif tag == "meta" and a.get("name", "").strip().lower() in self._robot_names:
            self.info.robots.add(a.get("content", ""))
        elif tag == "base" and a.get("href") and self.info.base is None:
            self.info.base = a["href"].strip()
        elif tag == "title" and not self._title:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)

    def result(self) -> PageInfo:
        self.info.title = _WS.sub(" ", "".join(self._title)).strip()
        return self.info


def decode_html(body: bytes, charset: str | None) -> str:
    """The page text: the header's charset, else a ``<meta charset>``, else UTF-8."""
    candidates = [charset]
    sniffed = _META_CHARSET.search(body[:4096])
    if sniffed:
        candidates.append(sniffed.group(1).decode("ascii", errors="ignore"))
    for name in candidates:
        if name:
            try:
                return body.decode(name, errors="replace")
            except LookupError:
                continue
    return body.decode("utf-8", errors="replace")


def parse_html(body: bytes, charset: str | None, robot_names: Iterable[str]) -> PageInfo:
    parser = _Parser(frozenset(n.lower() for n in robot_names))
    try:
        parser.feed(decode_html(body, charset))
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some malformed markup
        pass
    return parser.result()


def header_canonical(link_headers: Iterable[str]) -> str | None:
    """The target of a ``Link: <url>; rel="canonical"`` header, if any."""
    for header in link_headers:
        for target, params in _LINK_ENTRY.findall(header):
            for param in params.split(";"):
                name, _, value = param.partition("=")
                rels = value.strip().strip('"').lower().split()
                if name.strip().lower() == "rel" and "canonical" in rels:
                    return target.strip()
    return None


def header_directives(values: Iterable[str], robot_names: Iterable[str]) -> Directives:
    """``X-Robots-Tag`` values that apply to us (unnamed, or naming one of ``robot_names``)."""
    names = {n.lower() for n in robot_names}
    directives = Directives()
    for value in values:
        head, sep, rest = value.partition(":")
        if (
            sep
            and head.strip()
            and "," not in head
            and head.strip().lower() not in ("unavailable_after",)
        ):
            if head.strip().lower() in names:
                directives.add(rest)
            continue  # a directive for another bot
        directives.add(value)
    return directives
