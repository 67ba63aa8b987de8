"""Web connector: each run is a full, polite crawl, made cheap by conditional GETs.

* **Change feed.** :meth:`WebConnector.changes` crawls the site (see
  :mod:`connectors.web.crawler`) and hands the pipeline batches of documents
  with their bytes inline (we fetched them anyway). Pages that answer 304 come
  back with the version stamp stored in the cursor and no bytes, so the
  pipeline classifies them unchanged; if it ever needs their bytes it calls
  :meth:`WebConnector.fetch`. The version is ``sha256:`` of the body, never the
  ETag, so a new ETag on identical bytes does not re-index.
* **Deletions.** The last batch carries ``complete=True`` only when the crawl
  covered everything (no ``max_pages`` cut, no transient errors, robots.txt and
  sitemaps readable); the pipeline then deletes what the crawl did not list.
  Pages answering 404/410 (or any 4xx: 401/403 mean "no longer public") and
  newly ``noindex`` pages are also reported in ``deleted`` explicitly (last
  batch), so they go even after an incomplete crawl. Why a run was incomplete is
  in :attr:`WebConnector.last_report` and the log. After an incomplete crawl the
  pipeline asks :meth:`WebConnector.list_ids`, which answers from the crawl's
  state (seen pages plus known pages it did not reach), so nothing is deleted
  merely for being missed. This relies on the pipeline committing the cursor
  together with the index, as it does: every indexed page has a cursor entry.
  :meth:`WebConnector.fetch` of a URL outside the crawl's hosts or globs is a
  ``DocumentGone`` (nothing is requested), so the pipeline drops the id.
* **Cursor** (:mod:`connectors.web.state`): per URL its ETag/Last-Modified, the
  version, title and links. Every batch carries the state learned so far merged
  with the previous cursor, so a run that dies half way restarts from the start
  URLs and finds the already-fetched pages unchanged (304) — a cheap resume.
* **Ids** are ``{source}:{normalised URL}`` of the URL that was fetched (after
  redirects), never a canonical the page names (canonicals only de-duplicate:
  :mod:`connectors.web.crawler`); ``uri`` is that URL, ``title`` the page's ``<title>``.
* **ACL.** Native ACL is :meth:`Acl.public_acl` (``public: false`` in the ``web``
  block makes it :meth:`Acl.empty` for an intranet); an ``acl`` rule that matches
  the path replaces it in the pipeline. ``path`` is the normalised URL path — or,
  when servers may read the path in ways the rules treat differently, the
  reading with the strictest ACL (:mod:`connectors.web.scope`).
* **Safety.** Every request is on an allowed host and passes the SSRF guard,
  which connects only to the addresses it checked (:mod:`connectors.web.guard`);
  robots.txt is obeyed (:mod:`connectors.web.robots`); bodies are capped at the
  source's ``limits.max_bytes``; 429/503 ``Retry-After`` is honoured by
  :class:`~connectors.http.HttpClient`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx

from connectors.base import ChangeBatch, DocumentStamp, settings_block
from connectors.errors import ConnectorError, DocumentGone
from connectors.http import HttpClient
from connectors.models import DocumentFailure, SourceDocument
from connectors.scope import SourceScope
from connectors.web.config import WebConfig
from connectors.web.crawler import Crawler, CrawlReport
from connectors.web.fetch import Fetcher, install_body_cap
from connectors.web.guard import AddressGuard, BlockedAddress, PinnedTransport
from connectors.web.scope import UrlRules
from connectors.web.state import PageState, dump_state, load_state
from connectors.web.urls import host_of, normalise, path_of
from core.acl import Acl

log = logging.getLogger(__name__)


class PageGone(DocumentGone):
    """``fetch``: the page now answers 404/410 (or another 4xx) or redirects out of scope."""


class PageNotIndexable(DocumentGone):
    """``fetch``: the page is now ``noindex``, disallowed by robots.txt, or not a document."""


class CrawlIncomplete(ConnectorError):
    """``list_ids``: the crawl was cut short, so its listing cannot drive deletions."""


class WebConnector:
    """Crawls one ``type: web`` source.

    >>> source = settings.source("handbook")  # doctest: +SKIP
    >>> connector = WebConnector(source.scope(), source.web)  # doctest: +SKIP
    >>> batches = list(connector.changes(previous_cursor))  # doctest: +SKIP

    :param scope: the source's name, globs, ACL rules, ``max_bytes`` and retry budget.
    :param settings: its ``web`` block: start URLs, sitemaps and crawl limits.
    :param http: an ``httpx.Client`` to send requests with (its response hooks gain a
        body-size cap); by default one is built with the configured timeout, connecting
        only to addresses the SSRF guard checked. A client of your own cannot be pinned
        like that, so it is accepted only with ``allow_private_addresses: true``.
    :param sleep: how to wait between requests and before retries (tests pass a no-op).
    :raises ValueError: ``settings`` is not a ``web:`` block; ``http`` given while private
        addresses are refused; upper-case globs with ``case_insensitive_paths``.
    """

    def __init__(
        self,
        scope: SourceScope,
        settings: WebConfig,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.scope = scope
        self.settings = settings_block(settings, WebConfig, "web", "WebConnector")
        self.source = scope.name
        self.start_urls = [u for u in (normalise(s) for s in self.settings.start_urls) if u]
        self.sitemaps = [u for u in (normalise(s) for s in self.settings.sitemaps) if u]
        # The hosts of the start URLs and configured sitemaps are always allowed;
        # `allowed_hosts` adds more. Nothing off these hosts is ever requested.
        self.allowed_hosts = frozenset(self.settings.allowed_hosts) | {
            host_of(u) for u in (*self.start_urls, *self.sitemaps)
        }
        private_ok = self.settings.allow_private_addresses
        if http is not None and not private_ok:
            raise ValueError(
                f"source {self.source!r}: a caller's httpx client cannot be pinned to the "
                "addresses the SSRF guard checked; pass none (or allow private addresses)"
            )
        self.guard = AddressGuard(allow_private=private_ok)
        self._owns_client = http is None
        client = http or httpx.Client(
            timeout=self.settings.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": self.settings.user_agent},
            transport=None if private_ok else PinnedTransport(self.guard),
        )
        install_body_cap(client, scope.max_bytes)
        self.http = HttpClient(client, scope.retry, sleep=sleep)
        self._sleep = sleep
        self.native_acl = Acl.public_acl() if self.settings.public else Acl.empty()
        self.rules = self._url_rules(scope)
        self._state: dict[str, PageState] = {}
        self.last_report: CrawlReport | None = None

    # -- the contract ---------------------------------------------------------------

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        """Crawl; batches of ``batch_size`` documents, the last one ``complete`` if nothing was cut.

        :raises BlockedAddress: a start URL's host is not public (SSRF guard).
        """
        crawler = self._crawler(_renormalised(load_state(cursor)))
        documents: list[SourceDocument] = []
        failures: list[DocumentFailure] = []
        gone: set[str] = set()
        for outcome in crawler.run():
            if outcome.document is not None:
                documents.append(outcome.document)
            if outcome.failure is not None:
                failures.append(outcome.failure)
            gone.update(outcome.gone)
            if len(documents) + len(failures) >= self.settings.batch_size:
                yield ChangeBatch(documents, failures, cursor=dump_state(crawler.merged_state()))
                documents, failures = [], []
        report = crawler.report
        self._finish(crawler)
        yield ChangeBatch(
            documents,
            failures,
            deleted=sorted(gone - crawler.emitted),
            cursor=dump_state(crawler.final_state()),
            complete=report.complete,
        )

    def list_ids(self) -> Iterator[DocumentStamp]:
        """Every page known to exist, as stamps.

        After :meth:`changes` ran on this instance (the pipeline calls ``list_ids``
        right after an *incomplete* crawl), the answer comes from that crawl's
        state without a request: the pages it saw plus, when it was cut short,
        the pages known from before that it did not reach — so the listing never
        deletes a page only because the crawl missed it. Without a previous
        crawl, this crawls now and answers only if that crawl is complete.

        :raises CrawlIncomplete: no previous crawl, and this one was cut short.
        """
        if self.last_report is None:
            crawler = self._crawler({})
            for _ in crawler.run():
                pass
            self._finish(crawler)
            if not crawler.report.complete:
                raise CrawlIncomplete(
                    f"source {self.source!r}: the crawl was incomplete "
                    f"({crawler.report.summary()}); no listing is returned so that nothing "
                    "is deleted"
                )
        listed = [
            (url, page) for url, page in self._state.items() if page.version and not page.noindex
        ]
        primary = {page.doc_id for _, page in listed if page.canonical is None}
        seen: set[str] = set()
        for url, page in listed:
            doc_id, version = page.doc_id, page.version
            if doc_id is None or version is None or doc_id in seen:
                continue
            if page.canonical is not None and f"{self.source}:{page.canonical}" in primary:
                continue  # a duplicate of a page that is listed itself
            path = self.rules.verdict(path_of(url)).path
            if path is None:
                continue  # the rules changed and now refuse it: not listed, so deleted
            seen.add(doc_id)
            yield DocumentStamp(doc_id, version, self.native_acl, path)

    def fetch(self, doc_id: str) -> SourceDocument:
        """The page behind ``doc_id``, fetched now (unconditionally), with its bytes.

        :raises PageGone: 404/410, or a redirect out of the crawl's scope.
        :raises PageNotIndexable: noindex, robots.txt disallows it, or not a document type.
        :raises DocumentGone: the URL is outside the crawl's hosts or include/exclude
            globs (nothing is requested).
        :raises ConnectorError: not this source's id, or the fetch failed.
        """
        head = f"{self.source}:"
        url = normalise(doc_id[len(head) :]) if doc_id.startswith(head) else None
        if url is None:
            raise ConnectorError(f"{doc_id!r} is not a document of source {self.source!r}")
        crawler = self._crawler({})
        if not crawler.in_scope(url):
            # The crawl's rule: an id from before an `exclude` was added never comes back.
            raise DocumentGone(f"{doc_id!r} is outside the crawl's hosts or globs")
        outcome = crawler.fetch_one(url)
        if outcome.document is not None:
            doc = outcome.document
            if doc.doc_id != doc_id:  # the canonical moved; answer for the id asked about
                doc = replace(doc, doc_id=doc_id)
            return doc
        if outcome.failure is not None:
            raise ConnectorError(f"{doc_id}: {outcome.failure.reason}")
        if outcome.missing:
            raise PageGone(f"{doc_id}: {outcome.note}")
        raise PageNotIndexable(f"{doc_id}: {outcome.note}")

    def close(self) -> None:
        if self._owns_client:
            self.http.close()

    # -- helpers --------------------------------------------------------------------

    def _url_rules(self, scope: SourceScope) -> UrlRules:
        case_insensitive = self.settings.case_insensitive_paths
        if case_insensitive:
            globs = [*scope.include, *scope.exclude, *scope.acl.patterns]
            upper = [g for g in globs if g != g.lower()]
            if upper:
                raise ValueError(
                    f"source {self.source!r}: with `case_insensitive_paths: true` paths are "
                    f"matched in lower case, so write these globs in lower case: {upper}"
                )
        return UrlRules(
            include=scope.include,
            exclude=scope.exclude,
            policy=scope.acl,
            native=self.native_acl,
            case_insensitive=case_insensitive,
        )

    def _crawler(self, previous: dict[str, PageState]) -> Crawler:
        guard = self.guard
        guard.forget()  # each run resolves afresh (then sticks to what it checked)
        for url in self.start_urls:
            try:
                guard.check(url)
            except BlockedAddress as exc:
                raise BlockedAddress(f"source {self.source!r}: start URL {url}: {exc}") from exc
            except ConnectorError:
                pass  # unresolvable now: the crawl records it as a failure
        return Crawler(
            source=self.source,
            start_urls=self.start_urls,
            sitemaps=self.sitemaps,
            allowed_hosts=self.allowed_hosts,
            rules=self.rules,
            max_pages=self.settings.max_pages,
            max_depth=self.settings.max_depth,
            request_delay_s=self.settings.request_delay_s,
            user_agent=self.settings.user_agent,
            fetcher=Fetcher(
                self.http, guard, self.settings.user_agent, allowed_hosts=self.allowed_hosts
            ),
            previous=previous,
            native_acl=self.native_acl,
            sleep=self._sleep,
        )

    def _finish(self, crawler: Crawler) -> None:
        report = crawler.report
        self._state = crawler.final_state()
        self.last_report = report
        if report.complete:
            log.info(
                "%s: crawl complete: %d fetched, %d unchanged, %d documents, %d failures",
                self.source,
                report.pages_fetched,
                report.not_modified,
                report.documents,
                report.failures,
            )
        else:
            log.warning(
                "%s: crawl incomplete (%s); pages it did not reach are kept, not deleted",
                self.source,
                report.summary(),
            )


def _renormalised(pages: dict[str, PageState]) -> dict[str, PageState]:
    """A cursor's entries under today's URL spelling.

    A cursor written before normalisation decoded ``%69`` (and the like) keys a
    page under another spelling; re-keyed, the page keeps its validators and its
    old id is found — and reported deleted when the page's id is now another.
    """
    return {(normalise(url) or url): page for url, page in pages.items()}
