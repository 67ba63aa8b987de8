"""The crawl: sitemaps and links from the start URLs, breadth first, one outcome per page.

Scope and order
    Start URLs and every ``<loc>`` of the configured sitemaps and of robots.txt
    ``Sitemap:`` lines are depth 0; a page's links are one deeper, followed
    while the depth is at most ``max_depth``. Only ``http``/``https`` URLs on the
    allowed hosts (the hosts of the start URLs and configured sitemaps plus
    ``allowed_hosts``) that pass the source's ``include``/``exclude`` globs and
    robots.txt are fetched; obvious non-documents (images, scripts, archives) are
    skipped by extension. ``max_pages`` bounds the fetches. Sitemaps named by
    robots.txt or by a sitemap index are read only on allowed hosts, too.
    Globs and ACL rules see the normalised URL path under every way a server
    may read it (:mod:`connectors.web.scope`); a path whose readings get
    permissions no single one of which is the strictest is not crawled.

What a page becomes
    * 200 with an indexable type (HTML, or a document type the parser reads:
      pdf, docx, pptx, xlsx, odt, rtf, epub, txt, md, csv) → a document with its
      bytes inline and version ``sha256:`` of the body, so the same bytes under a
      new ETag are not re-indexed. Its id, ``uri`` and ``path`` (so its
      permissions) follow the URL that was fetched (after redirects), never the
      canonical the page names.
    * Canonicals (``<link rel=canonical>`` or a ``Link`` header) only
      de-duplicate, and only when the canonical is in scope on an allowed host
      *and* gets exactly the same ACL as the fetched URL; any other canonical is
      ignored (and logged). A page whose canonical is another URL is a duplicate
      of it: not indexed, its links followed, the canonical crawled. Should the
      canonical yield no document this run, the page is indexed under its own
      id after all (without bytes: the pipeline fetches them).
    * 304 → the stored version, title and links: unchanged for the pipeline.
    * ``noindex`` (meta or ``X-Robots-Tag``) → not a document; its links are
      followed unless ``nofollow``; an earlier id for it is reported deleted.
    * 404/410 and every other 4xx (401/403: no longer public), or a redirect out
      of scope → deleted (if it was indexed), not a failure: a failure would keep
      the old copy searchable.
    * Blocked addresses, too many redirects, bodies over the size limit → a
      :class:`DocumentFailure`; the pipeline keeps the last good copy.
    * 5xx or network errors past the retry budget, robots.txt or a sitemap that
      cannot be read → a failure **and** an incomplete crawl.

Completeness
    The run is ``complete`` only when nothing was cut: no ``max_pages`` stop, no
    transient error, no unreadable robots.txt or sitemap. Only then may the
    pipeline delete what the crawl did not list; otherwise a single outage
    would wipe the index. :attr:`Crawler.report` says why a run was incomplete.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from connectors.common import parse_http_date
from connectors.errors import ConnectorError
from connectors.http import SourceAuthError, SourceUnavailable
from connectors.models import DocumentFailure, SourceDocument
from connectors.web.fetch import REDIRECT_STATUSES, Fetched, Fetcher, FetchError
from connectors.web.guard import BlockedAddress, HostUnresolvable
from connectors.web.page import PageInfo, header_canonical, header_directives, parse_html
from connectors.web.robots import RobotsCache, RobotsRules
from connectors.web.scope import UrlRules
from connectors.web.sitemap import SitemapError, parse_sitemap
from connectors.web.state import PageState
from connectors.web.urls import extension_of, host_of, normalise, origin_of, path_of
from core.acl import Acl

log = logging.getLogger(__name__)

# Content types the parser understands, as the doc_type it is handed.
CONTENT_TYPES: dict[str, str] = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/rtf": "rtf",
    "text/rtf": "rtf",
    "application/epub+zip": "epub",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/csv": "csv",
}
DOCUMENT_EXTENSIONS = frozenset(CONTENT_TYPES.values()) | {"htm", "markdown"}
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Never fetched: they cannot become documents.
_SKIPPED = """png jpg jpeg gif webp svg ico bmp tif tiff avif css js mjs map json woff woff2 ttf otf
eot mp3 mp4 m4a m4v mov avi webm ogg wav flac zip gz tgz bz2 xz 7z rar tar exe dmg msi
iso apk bin"""
SKIP_EXTENSIONS = frozenset(_SKIPPED.split())
MAX_SITEMAP_FILES = 100
MAX_SITEMAP_NESTING = 2
MAX_PROBLEMS_KEPT = 20


@dataclass(frozen=True)
class Outcome:
    """One step of the crawl: a document, a failure, or ids that are no longer indexable."""

    document: SourceDocument | None = None
    failure: DocumentFailure | None = None
    gone: frozenset[str] = frozenset()
    note: str = ""  # why a fetched page is not a document ("HTTP 410", "noindex", ...)
    missing: bool = False  # the page is gone (4xx, redirect out of scope), not just unindexable


@dataclass
class CrawlReport:
    pages_fetched: int = 0
    not_modified: int = 0
    documents: int = 0
    failures: int = 0
    gone: int = 0  # 4xx answers and redirects out of scope
    truncated: bool = False  # stopped by max_pages with pages left to visit
    errors: int = 0  # transient failures: each makes the crawl incomplete
    problems: list[str] = field(default_factory=list)  # the first few reasons

    @property
    def complete(self) -> bool:
        return not self.truncated and self.errors == 0

    def note(self, problem: str) -> None:
        self.errors += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)

    def summary(self) -> str:
        reasons = list(self.problems)
        if self.truncated:
            reasons.insert(0, "stopped at max_pages with pages left to visit")
        return "; ".join(reasons) or "complete"


class Crawler:
    """One run over one web source. Iterate :meth:`run`; then read ``report`` and ``state``."""

    def __init__(
        self,
        *,
        source: str,
        start_urls: list[str],
        sitemaps: list[str],
        allowed_hosts: frozenset[str],
        rules: UrlRules,
        max_pages: int,
        max_depth: int,
        request_delay_s: float,
        user_agent: str,
        fetcher: Fetcher,
        previous: dict[str, PageState],
        native_acl: Acl,
        sleep: Callable[[float], None],
    ) -> None:
        self.source = source
        self.start_urls = start_urls
        self.sitemaps = sitemaps
        self.allowed_hosts = allowed_hosts
        self.rules = rules
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.request_delay_s = request_delay_s
        self.user_agent = user_agent
        self.bot = user_agent.split("/", 1)[0].split()[0].lower() if user_agent.strip() else "*"
        self.fetcher = fetcher
        self.robots = RobotsCache(fetcher)
        self.previous = previous
        self.native_acl = native_acl
        self._sleep = sleep
        self.state: dict[str, PageState] = {}
        self.report = CrawlReport()
        self.emitted: set[str] = set()
        self._queue: deque[tuple[str, int]] = deque()
        self._seen: set[str] = set()
        self._visited_origins: set[str] = set()
        self._robots_reported: set[str] = set()
        self._outbox: list[Outcome] = []
        self._dropped: set[str] = set()  # URLs found gone: their old state is forgotten
        self._variants: dict[str, str] = {}  # URL -> the canonical it is a duplicate of
        self._single = False  # fetch_one: a page is its own document, canonical or not

    # -- state for the cursor -------------------------------------------------------

    def merged_state(self) -> dict[str, PageState]:
        """Everything known: the previous cursor updated with this run (mid-run cursors)."""
        kept = {u: p for u, p in self.previous.items() if u not in self._dropped}
        return {**kept, **self.state}

    def final_state(self) -> dict[str, PageState]:
        """After a complete crawl only what it saw; otherwise keep the old entries too."""
        return dict(self.state) if self.report.complete else self.merged_state()

    # -- the crawl --------------------------------------------------------------------

    def run(self) -> Iterator[Outcome]:
        for url in self.start_urls:
            self._enqueue(url, 0)
        yield from self._read_sitemaps()
        while self._queue:
            url, depth = self._queue.popleft()
            if self.report.pages_fetched >= self.max_pages:
                left = [url, *(u for u, _ in self._queue)]
                if any(self._robots_allow(u) for u in left):
                    self.report.truncated = True
                yield from self._flush()
                break
            if not self._robots_allow(url):
                yield from self._flush()
                continue
            yield from self._flush()
            yield from self._visit(url, depth)
        yield from self._flush()
        yield from self._unclaimed_variants()

    def fetch_one(self, url: str) -> Outcome:
        """Fetch one URL as a page of this crawl (no link following); its outcome."""
        self.max_depth = -1
        self._single = True
        if not self._robots_allow(url):
            problem = self._outbox[0].failure if self._outbox else None
            if problem is not None:  # robots.txt unreachable, or the host is blocked
                return Outcome(failure=problem)
            return Outcome(note="disallowed by robots.txt")
        outcomes = list(self._visit(url, 0))
        for outcome in outcomes:
            if outcome.document or outcome.failure:
                return outcome
        return outcomes[-1] if outcomes else Outcome(note="not a document")

    # -- scope ------------------------------------------------------------------------

    def in_scope(self, url: str) -> bool:
        if host_of(url) not in self.allowed_hosts:
            return False
        if extension_of(url) in SKIP_EXTENSIONS:
            return False
        return self.rules.admits(path_of(url))

    def acl_path(self, url: str) -> str | None:
        """The path a document from ``url`` reports (what the ACL rules match); None: refused."""
        return self.rules.verdict(path_of(url)).path

    def _enqueue(self, url: str, depth: int) -> None:
        if url in self._seen or depth > self.max_depth or not self.in_scope(url):
            return
        self._seen.add(url)
        self._queue.append((url, depth))

    def _rules(self, url: str) -> RobotsRules:
        rules = self.robots.rules_for(url)
        if rules.problem and rules.origin not in self._robots_reported:
            self._robots_reported.add(rules.origin)
            self.report.note(f"{rules.origin}: {rules.problem}")
            robots_url = f"{rules.origin}/robots.txt"
            self._outbox.append(Outcome(failure=self._failure(robots_url, rules.problem)))
        return rules

    def _robots_allow(self, url: str) -> bool:
        try:
            return self._rules(url).allows(url, self.user_agent)
        except BlockedAddress as exc:
            self._outbox.append(Outcome(failure=self._failure(url, str(exc))))
            return False

    def _flush(self) -> Iterator[Outcome]:
        while self._outbox:
            yield self._outbox.pop(0)

    def _polite(self, url: str) -> None:
        origin = origin_of(url)
        if origin in self._visited_origins:
            rules = self.robots.cached(url)
            crawl_delay = rules.crawl_delay(self.user_agent) if rules else 0.0
            delay = max(self.request_delay_s, crawl_delay)
            if delay > 0:
                self._sleep(delay)
        self._visited_origins.add(origin)

    # -- sitemaps ---------------------------------------------------------------------

    def _read_sitemaps(self) -> Iterator[Outcome]:
        pending: deque[tuple[str, int]] = deque()
        for raw in self.sitemaps:
            url = normalise(raw)
            if url:
                pending.append((url, 0))
        for start in self.start_urls:
            try:
                rules = self._rules(start)
            except BlockedAddress as exc:
                self._outbox.append(Outcome(failure=self._failure(start, str(exc))))
                continue
            pending.extend((u, 0) for u in self._sitemap_urls(rules.sitemaps, start))
        yield from self._flush()
        done: set[str] = set()
        while pending and len(done) < MAX_SITEMAP_FILES:
            url, level = pending.popleft()
            if url in done:
                continue
            done.add(url)
            problem = None
            self._polite(url)
            try:
                fetched = self.fetcher.get(url)
            except (ConnectorError, FetchError) as exc:
                problem = f"sitemap unavailable: {exc}"
            else:
                if fetched.refused_redirect is not None:
                    problem = (
                        f"sitemap redirects to {fetched.refused_redirect}, which is not on an "
                        "allowed host (add it to `allowed_hosts` to read it)"
                    )
                elif fetched.status != 200:
                    problem = f"sitemap answered {fetched.status}"
                else:
                    try:
                        sitemap = parse_sitemap(fetched.body)
                    except SitemapError as exc:
                        problem = f"sitemap unreadable: {exc}"
            if problem is not None:
                self.report.note(f"{url}: {problem}")
                yield Outcome(failure=self._failure(url, problem))
                continue
            if sitemap.truncated:
                self.report.note(f"{url}: over 50,000 entries; the rest were not read")
            if sitemap.kind == "sitemapindex":
                if level < MAX_SITEMAP_NESTING:
                    pending.extend((u, level + 1) for u in self._sitemap_urls(sitemap.locs, url))
                continue
            for loc in sitemap.locs:
                page = normalise(loc)
                if page:
                    self._enqueue(page, 0)
        if any(url not in done for url, _ in pending):
            self.report.note(f"more than {MAX_SITEMAP_FILES} sitemap files; the rest were not read")

    def _sitemap_urls(self, raw_urls: tuple[str, ...], named_by: str) -> Iterator[str]:
        """The sitemap URLs a robots.txt or sitemap index names that are on allowed hosts."""
        for raw in raw_urls:
            url = normalise(raw)
            if url is None or host_of(url) not in self.allowed_hosts:
                log.info("%s names the sitemap %s, not on an allowed host: not read", named_by, raw)
                continue
            yield url

    # -- one page ---------------------------------------------------------------------

    def _visit(self, url: str, depth: int) -> Iterator[Outcome]:
        self._polite(url)
        self.report.pages_fetched += 1

        def validators(hop: str) -> dict[str, str]:
            known = self.previous.get(hop)
            return known.conditional_headers() if known else {}

        def follow(target: str) -> bool:
            return self.in_scope(target) and self._robots_allow(target)

        try:
            fetched = self.fetcher.get(url, validators=validators, follow=follow)
        except (SourceUnavailable, HostUnresolvable) as exc:
            yield self._transient(url, str(exc))
            return
        except SourceAuthError:
            # No longer public: like any 4xx, the page is gone (not a failure, which
            # would keep the old copy searchable).
            yield self._gone(url, (url,), "refused (HTTP 401/403)")
            return
        except (BlockedAddress, FetchError) as exc:
            yield self._fail(url, str(exc))
            return
        yield from self._flush()
        for hop in fetched.hops:
            self._seen.add(hop)
        self._seen.add(fetched.url)
        yield from self._handle(url, depth, fetched)

    def _previous_ids(self, *urls: str) -> frozenset[str]:
        return frozenset(
            known.doc_id for u in urls if (known := self.previous.get(u)) and known.doc_id
        )

    def _handle(self, url: str, depth: int, fetched: Fetched) -> Iterator[Outcome]:
        status = fetched.status
        all_urls = (url, *fetched.hops, fetched.url)
        if status in REDIRECT_STATUSES:  # a redirect we did not follow (out of scope)
            yield self._gone(url, all_urls, f"redirects out of scope to {fetched.refused_redirect}")
            return
        if status == 304:
            yield from self._not_modified(fetched, depth)
            return
        if 400 <= status < 500:  # 404/410 and every other 4xx (429 is retried earlier)
            yield self._gone(url, all_urls, f"gone (HTTP {status})")
            return
        if status >= 500:
            yield self._transient(fetched.url, f"HTTP {status}")
            return
        if status == 204 or not 200 <= status < 300:
            yield self._fail(fetched.url, f"HTTP {status}")
            return
        yield from self._page(fetched, depth, all_urls)

    def _not_modified(self, fetched: Fetched, depth: int) -> Iterator[Outcome]:
        known = self.previous.get(fetched.url)
        if known is None:
            yield self._fail(fetched.url, "304 Not Modified but no stored copy")
            return
        self.report.not_modified += 1
        final = fetched.url
        own_id = f"{self.source}:{final}" if known.doc_id else None
        canonical = known.canonical
        if canonical is not None and not self._same_permissions(final, canonical):
            canonical = None
        state = replace(
            known,
            doc_id=own_id,
            canonical=canonical,
            etag=fetched.headers.get("etag") or known.etag,
            last_modified=fetched.headers.get("last-modified") or known.last_modified,
        )
        self.state[final] = state
        if not state.nofollow:
            self._enqueue_links(state.links, depth)
        # An id from an older cursor (a canonical's) is not this page's id any more.
        stale = self._previous_ids(final) - {own_id}
        if state.noindex or not own_id or not state.version:
            yield Outcome(gone=stale, note="noindex" if state.noindex else "not a document")
            return
        yield from self._document(final, state, stale, None, self._duplicate_of(state))

    def _doc_type(self, fetched: Fetched) -> str | None:
        ctype = fetched.content_type
        if ctype in CONTENT_TYPES:
            return CONTENT_TYPES[ctype]
        if ctype in GENERIC_TYPES:
            ext = extension_of(fetched.url)
            return ext if ext in DOCUMENT_EXTENSIONS else None
        return None

    def _canonical(self, fetched: Fetched, info: PageInfo) -> str | None:
        """The page's canonical when it may de-duplicate the page; ``None`` otherwise."""
        raw = header_canonical(fetched.headers.get_list("link")) or info.canonical
        if not raw:
            return None
        target = normalise(raw, base=fetched.url)
        if target is None or target == fetched.url:
            return None
        if not self.in_scope(target):
            log.info("%s: ignoring its canonical %s: not in the crawl's scope", fetched.url, raw)
            return None
        if not self._same_permissions(fetched.url, target):
            log.warning(
                "%s: ignoring its canonical %s: the ACL rules give it other permissions",
                fetched.url,
                target,
            )
            return None
        return target

    def _same_permissions(self, url: str, other: str) -> bool:
        mine = self.rules.verdict(path_of(url))
        theirs = self.rules.verdict(path_of(other))
        return mine.path is not None and theirs.path is not None and mine.acl == theirs.acl

    def _page(self, fetched: Fetched, depth: int, all_urls: tuple[str, ...]) -> Iterator[Outcome]:
        final = fetched.url
        doc_type = self._doc_type(fetched)
        info = PageInfo()
        if doc_type == "html":
            info = parse_html(fetched.body, fetched.charset, ("robots", self.bot))
        directives = header_directives(fetched.headers.get_list("x-robots-tag"), (self.bot,))
        noindex = directives.noindex or info.robots.noindex
        nofollow = directives.nofollow or info.robots.nofollow
        base = normalise(info.base, base=final) if info.base else final
        links: list[str] = []
        for href in info.links:
            target = normalise(href, base=base or final)
            if target and target not in links and self.in_scope(target):
                links.append(target)
        canonical = self._canonical(fetched, info)
        if canonical and canonical not in links:
            links.append(canonical)
        doc_id = f"{self.source}:{final}" if doc_type and not noindex else None
        version = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        title = info.title or path_of(final).rstrip("/").rsplit("/", 1)[-1] or host_of(final)
        modified = fetched.headers.get("last-modified")
        state = PageState(
            doc_id=doc_id,
            version=version if doc_id else None,
            etag=fetched.headers.get("etag"),
            last_modified=modified,
            title=title,
            doc_type=doc_type or "",
            size=len(fetched.body),
            modified_at=modified,
            noindex=noindex,
            nofollow=nofollow,
            links=tuple(links),
            canonical=canonical,
        )
        self.state[final] = state
        if not nofollow:
            self._enqueue_links(links, depth)
        stale = self._previous_ids(*all_urls) - {doc_id}
        if doc_id is None:
            # noindex, or not a type we index: an id it had before is gone.
            note = "noindex" if noindex else f"not a document type ({fetched.content_type})"
            yield Outcome(gone=stale, note=note)
            return
        yield from self._document(final, state, stale, fetched.body, self._duplicate_of(state))

    def _duplicate_of(self, state: PageState) -> str | None:
        """The canonical that stands for a page in this crawl (none when fetching one page)."""
        return None if self._single else state.canonical

    def _document(
        self,
        url: str,
        state: PageState,
        stale: frozenset[str],
        content: bytes | None,
        duplicate_of: str | None,
    ) -> Iterator[Outcome]:
        """The document for a fetched ``url`` — unless it is a duplicate (of its canonical,
        or of a page already indexed under its id)."""
        doc_id, version = state.doc_id, state.version
        if doc_id is None or version is None:
            yield Outcome(gone=stale, note="not a document")
            return
        if duplicate_of is not None:
            self._variants[url] = duplicate_of
            yield Outcome(gone=stale, note=f"duplicate of {duplicate_of} (its canonical)")
            return
        if doc_id in self.emitted:  # a page already indexed this run (reached again by redirect)
            yield Outcome(gone=stale, note=f"duplicate of {doc_id}")
            return
        path = self.acl_path(url)
        if path is None:  # in scope when enqueued; the rules cannot have changed since
            yield self._fail(url, "no unambiguous ACL for its path")
            return
        self.emitted.add(doc_id)
        self.report.documents += 1
        yield Outcome(
            gone=stale,
            document=SourceDocument(
                doc_id=doc_id,
                source=self.source,
                path=path,
                uri=url,
                title=state.title,
                version=version,
                size=state.size,
                modified_at=parse_http_date(state.modified_at),
                doc_type=state.doc_type,
                acl=self.native_acl,
                content=content,  # None: unchanged, the pipeline keeps what it has (or fetches)
            ),
        )

    def _unclaimed_variants(self) -> Iterator[Outcome]:
        """Duplicates whose canonical gave no document this run: indexed under their own id.

        Not after a ``max_pages`` cut: the canonical may simply not have been reached.
        """
        if self.report.truncated:
            return
        for url, canonical in self._variants.items():
            state = self.state.get(url)
            if f"{self.source}:{canonical}" in self.emitted or state is None:
                continue
            log.info("%s: its canonical %s gave no document; indexing it instead", url, canonical)
            yield from self._document(url, state, frozenset(), None, duplicate_of=None)

    def _enqueue_links(self, links: tuple[str, ...] | list[str], depth: int) -> None:
        for link in links:
            self._enqueue(link, depth + 1)

    # -- failures ---------------------------------------------------------------------

    def _gone(self, url: str, urls: tuple[str, ...], note: str) -> Outcome:
        """The page is not (or no longer) available: its old ids are deleted, state forgotten."""
        self.report.gone += 1
        self._dropped.update(urls)
        return Outcome(gone=self._previous_ids(*urls), note=note, missing=True)

    def _failure(self, url: str, reason: str) -> DocumentFailure:
        return DocumentFailure(doc_id=f"{self.source}:{url}", path=path_of(url), reason=reason)

    def _fail(self, url: str, reason: str) -> Outcome:
        """A page that cannot be indexed for a lasting reason (the crawl stays complete)."""
        self.report.failures += 1
        return Outcome(failure=self._failure(url, reason))

    def _transient(self, url: str, reason: str) -> Outcome:
        """A page that failed for now: keep its old state and do not let the pipeline prune."""
        self.report.failures += 1
        self.report.note(f"{url}: {reason}")
        if url in self.previous:
            self.state[url] = self.previous[url]
        return Outcome(failure=self._failure(url, reason))
