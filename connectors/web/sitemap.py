"""Sitemaps (sitemaps.org 0.9): ``<urlset>`` and ``<sitemapindex>``, plain or gzipped.

Parsed with ``defusedxml``, which refuses DTDs, entity definitions and external
references (billion-laughs and XXE), because a sitemap is untrusted input.
Gzip is detected by its magic bytes (``.xml.gz`` files, or a server that sends
them without ``Content-Encoding``) and inflated with a cap: the protocol allows
at most 50 MB uncompressed and 50,000 URLs per file, and a file over either is
cut there (with the fact reported). ``<lastmod>`` is a hint only and is ignored;
conditional GETs and content hashes decide what changed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from core.errors import TroveError

MAX_SITEMAP_BYTES = 50 * 1024 * 1024
MAX_SITEMAP_URLS = 50_000
_GZIP_MAGIC = b"\x1f\x8b"


class SitemapError(TroveError, ValueError):
    """Not a sitemap this parser accepts; the message says why."""


@dataclass(frozen=True)
class Sitemap:
    kind: Literal["urlset", "sitemapindex"]
    locs: tuple[str, ...]  # page URLs (urlset) or child sitemap URLs (sitemapindex)
    truncated: bool = False  # over 50,000 entries or 50 MB: the rest was dropped


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_SITEMAP_BYTES + 1)
    except zlib.error as exc:
        raise SitemapError(f"bad gzip data: {exc}") from exc
    if len(out) > MAX_SITEMAP_BYTES:
        raise SitemapError(f"uncompressed sitemap over {MAX_SITEMAP_BYTES} bytes")
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_sitemap(data: bytes) -> Sitemap:
    """The entries of one sitemap file.

    :raises SitemapError: not XML, forbidden XML constructs, or neither urlset nor sitemapindex.
    """
    if data[:2] == _GZIP_MAGIC:
        data = _inflate(data)
    if len(data) > MAX_SITEMAP_BYTES:
        raise SitemapError(f"sitemap over {MAX_SITEMAP_BYTES} bytes")
    try:
        root = fromstring(data)
    except DefusedXmlException as exc:
        raise SitemapError(f"refused unsafe XML ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise SitemapError(f"not XML: {exc}") from exc
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"root element <{kind}> is neither <urlset> nor <sitemapindex>")
    entry = "url" if kind == "urlset" else "sitemap"
    locs: list[str] = []
    truncated = False
    for child in root:
        if _local(child.tag) != entry:
            continue
        loc = next((f.text for f in child if _local(f.tag) == "loc"), None)
        if not loc or not loc.strip():
            continue
        if len(locs) >= MAX_SITEMAP_URLS:
            truncated = True
            break
        locs.append(loc.strip())
    return Sitemap(kind=kind, locs=tuple(locs), truncated=truncated)  # type: ignore[arg-type]
