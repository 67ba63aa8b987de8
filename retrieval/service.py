"""``RetrievalService``: the one place the HTTP API and the MCP server get answers from.

Everything a caller may or may not see is decided here, once:

* **Who** — :meth:`RetrievalService.authenticate` turns a bearer token into a
  :class:`~core.acl.Principal` (nothing else can name one) and refuses a
  requested tenant the token does not carry.
* **What** — searches run through :class:`~retrieval.search.Searcher`, whose
  index filters by ``Acl.permits`` inside the query and re-checks every record
  it returns; document lookups use the same ``Acl.permits`` on each chunk. An
  absent document and a forbidden one give the same
  :class:`DocumentNotFoundError`, so existence does not leak. No admin bypass.
* **How much** — query length, ``top_k`` and a per-principal rate limit.

A search: permission-filtered hybrid candidates → rerank → merge adjacent
chunks and cap passages per document → cut to ``top_k`` → ``low_confidence``
when the best passage's evidence score (see :mod:`retrieval.rerank`) is below
the threshold. The index reader moves to the newest commit at most once per
``refresh_interval_s``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.acl import Principal
from core.errors import TroveError
from core.identity import InvalidIdentity, canonical_tenant
from retrieval.audit import AuditLog
from retrieval.auth import InvalidTokenError, TokenVerifier
from retrieval.config import ApiConfig, RetrievalConfig
from retrieval.diversify import DiversifyStats, RankedPassage, diversify
from retrieval.index.base import ChunkRecord, IndexBackend, IndexStats
from retrieval.models import NO_FILTERS, Citation, Passage, SearchFilters
from retrieval.rerank import Candidate, EvidenceReranker, Reranker, evidence_scores
from retrieval.rerank import rerank as rerank_candidates
from retrieval.search import Searcher, passage_from_record

logger = logging.getLogger(__name__)

MAX_TOP_K = 50
MAX_DOC_ID_CHARS = 1_024
# Chosen by measurement on the demo corpus
# (docs/benchmarks.md#the-low_confidence-threshold): the evidence score of the best
# passage for answerable golden queries against off-topic queries.
DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.30
PDF_TYPES = frozenset({"pdf"})
HEADING_TYPES = frozenset({"md", "markdown", "html", "htm"})


def _tenant_spelled_as_tokens(requested: str) -> str:
    """A requested tenant in the canonical form a token's tenant has; one with none stays as
    sent, which matches no token's tenant (a 403, never another tenant's data)."""
    try:
        return canonical_tenant(requested)
    except InvalidIdentity:
        return requested


class ServiceError(TroveError):
    """Base class of the errors the edges (HTTP, MCP) map to responses."""


class AuthenticationError(ServiceError):
    """No valid credentials (HTTP 401); the message gives the reason, never the token."""


class TenantForbiddenError(ServiceError):
    """A request asked for a tenant its token does not carry (HTTP 403)."""


class RateLimitedError(ServiceError):
    """The principal exceeded its request budget (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidRequestError(ServiceError, ValueError):
    """A request argument is out of range (HTTP 422); the message names it."""


class DocumentNotFoundError(ServiceError):
    """The document (or chunk) is absent *or* not readable by the principal (HTTP 404)."""


# ----------------------------------------------------------------------------- limits


class RateLimiter:
    """At most ``per_minute`` requests per key in any sliding 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            if len(hits) >= self.per_minute:
                retry = 60.0 - (now - hits[0])
                raise RateLimitedError(
                    f"rate limit of {self.per_minute} requests per minute exceeded",
                    retry_after_s=max(retry, 0.0),
                )
            hits.append(now)
            if len(self._hits) > 100_000:  # forget idle principals, keep memory bounded
                idle = [k for k, v in self._hits.items() if not v or now - v[-1] >= 60.0]
                for k in idle:
                    del self._hits[k]


# ----------------------------------------------------------------------------- results


def heading_anchor(heading: str) -> str:
    """A GitHub-style anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r" ", "-", text)


def deep_link(citation: Citation, doc_type: str) -> str:
    """The citation's URI with a fragment where the format allows one.

    ``#page=N`` (the first page) for PDFs; the innermost heading's anchor for
    Markdown and HTML; otherwise the plain URI.
    """
    kind = doc_type.lower()
    if kind in PDF_TYPES and citation.pages:
        return f"{citation.uri}#page={citation.pages[0]}"
    if kind in HEADING_TYPES and citation.section:
        anchor = heading_anchor(citation.section[-1])
        if anchor:
            return f"{citation.uri}#{anchor}"
    return citation.uri


def risk_of(record: ChunkRecord) -> tuple[dict[str, Any], ...]:
    """Risk flags stored with a chunk by ingestion's screening, else none.

    Read from a ``metadata["risk"]`` list when the record carries metadata; each
    entry is a mapping such as ``{"type": "prompt_injection", "score": 0.93}``.
    """
    metadata = getattr(record, "metadata", None)
    if not isinstance(metadata, Mapping):
        return ()
    risk = metadata.get("risk")
    if not isinstance(risk, list | tuple):
        return ()
    return tuple(dict(r) for r in risk if isinstance(r, Mapping) and "type" in r)


@dataclass(frozen=True)
class ResultPassage:
    """One result as the edges return it."""

    chunk_id: str
    chunk_ids: tuple[str, ...]
    doc_id: str
    source: str
    text: str
    score: float
    citation: Citation
    deep_link: str
    risk: tuple[dict[str, Any], ...] = ()


def _result(item: RankedPassage) -> ResultPassage:
    p = item.passage
    return ResultPassage(
        chunk_id=p.chunk_id,
        chunk_ids=item.chunk_ids,
        doc_id=p.doc_id,
        source=p.source,
        text=p.text,
        score=float(item.score),
        citation=p.citation,
        deep_link=deep_link(p.citation, item.doc_type),
        risk=item.risk,
    )


@dataclass(frozen=True)
class SearchOutcome:
    results: list[ResultPassage]
    low_confidence: bool
    took_ms: float
    best_evidence: float | None
    # Candidates not shown, by reason: dropped by the ACL re-check between index and
    # read ("acl_recheck"), folded into a merged passage ("merged"), over the
    # per-document cap ("per_document_cap").
    filtered_out: dict[str, int] = field(default_factory=dict)
    # Seconds spent per stage of this search (see STAGES), for the /metrics histograms.
    stage_seconds: dict[str, float] = field(default_factory=dict)


# The stages a search's time is reported under: group expansion, the engine (query
# embedding, both retrievers, fusion, records), rerank (evidence scores and order),
# merge (adjacent chunks, per-document cap) and the audit line. The HTTP edge adds
# "auth" (token and rate limit) and "serialize" (the JSON response); "queue" is the wait
# for a search slot (see ``max_concurrent_searches``).
STAGES = ("auth", "queue", "expand", "search", "rerank", "merge", "audit", "serialize")


class _TimedIdentity:
    """The searcher's group expansion, its time noted for the stage histograms.

    Expansion happens inside :meth:`Searcher.search_ranked`, on the calling thread;
    the time goes to that thread's current search only (nothing crosses requests).
    """

    def __init__(self, inner: Any, sink: threading.local):
        self.inner = inner
        self._sink = sink

    def expand(self, principal: Principal) -> Principal:
        started = time.perf_counter()
        try:
            return self.inner.expand(principal)
        finally:
            self._sink.expand_s = getattr(self._sink, "expand_s", 0.0) + (
                time.perf_counter() - started
            )


@dataclass(frozen=True)
class DocumentView:
    doc_id: str
    source: str
    title: str
    uri: str
    path: str
    doc_type: str
    doc_version: str
    modified_at: datetime | None
    chunk_count: int  # chunks this principal may read
    context: list[ResultPassage] | None  # neighbours of ``around``, in document order


@dataclass(frozen=True)
class StageOptions:
    """Which stages run (for ``trove eval-stages``); ``None`` means the configured default."""

    rerank: bool | None = None
    diversify: bool = True


# ----------------------------------------------------------------------------- the service


class RetrievalService:
    """Authenticated, permission-filtered, reranked and cited search over one index.

    :param index: the index backend (its ``refresh()`` is called when it has one).
    :param searcher: a :class:`Searcher` over ``index``.
    :param retrieval: ranking options (rerank, per-document cap, merging, threshold).
    :param api: limits and audit options.
    :param verifier: bearer-token verifier; without one every token is refused.
    :param reranker: the reranking stage (default :class:`EvidenceReranker`).
    :param audit: where to log requests (default: none).
    :param is_model_ready: tells ``/readyz`` whether the query model is loaded.
    """

    def __init__(
        self,
        index: IndexBackend,
        searcher: Searcher,
        *,
        retrieval: RetrievalConfig | None = None,
        api: ApiConfig | None = None,
        verifier: TokenVerifier | None = None,
        reranker: Reranker | None = None,
        audit: AuditLog | None = None,
        is_model_ready: Callable[[], bool] | None = None,
        refresh_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent_searches: int | None = None,
    ):
        if max_concurrent_searches is not None and max_concurrent_searches < 1:
            raise ValueError(f"max_concurrent_searches must be >= 1, got {max_concurrent_searches}")
        if searcher.index is not index:
            raise ValueError("the searcher must search the service's own index")
        self.index = index
        self.searcher = searcher
        self._stage = threading.local()
        if searcher.identity is not None and not isinstance(searcher.identity, _TimedIdentity):
            searcher.identity = _TimedIdentity(searcher.identity, self._stage)
        self.retrieval = retrieval or RetrievalConfig()
        self.api = api or ApiConfig(audit_log=None)
        self.verifier = verifier
        self.reranker: Reranker = reranker or EvidenceReranker()
        self.audit = audit or AuditLog(None)
        self.limiter = RateLimiter(self.api.rate_limit_per_minute, clock=clock)
        self._is_model_ready = is_model_ready or (lambda: True)
        self._refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._last_refresh = clock()
        self._refresh_lock = threading.Lock()
        # At most this many searches run at once; the rest wait their turn here. The
        # engine is CPU-bound: more searches in flight than cores only trade the GIL
        # between threads (every switch costs CPU) and finish none of them sooner.
        self.max_concurrent_searches = max_concurrent_searches or _default_concurrency()
        self._search_slots = threading.BoundedSemaphore(self.max_concurrent_searches)
        threshold = self.retrieval.low_confidence_threshold
        self.low_confidence_threshold = (
            DEFAULT_LOW_CONFIDENCE_THRESHOLD if threshold is None else threshold
        )

    # ------------------------------------------------------------------ who

    def authenticate(self, token: str | None, requested_tenant: str | None = None) -> Principal:
        """The principal a bearer token names.

        :param requested_tenant: a tenant the request asks for (header or body); it must
            equal the token's tenant, and it never changes the principal.
        :raises AuthenticationError: no verifier, or the token is missing or invalid.
        :raises TenantForbiddenError: ``requested_tenant`` differs from the token's.
        """
        if self.verifier is None:
            self.audit.record("auth", principal=None, outcome="refused:no-verifier")
            raise AuthenticationError("authentication is not configured on this server")
        try:
            principal = self.verifier.verify(token)
        except InvalidTokenError as exc:
            self.audit.record("auth", principal=None, outcome="unauthenticated")
            raise AuthenticationError(str(exc)) from exc
        self.check_tenant(principal, requested_tenant)
        return principal

    def check_tenant(self, principal: Principal, requested_tenant: str | None) -> None:
        """Refuse (403) a request that asks for another tenant than its token's."""
        if requested_tenant is None or _tenant_spelled_as_tokens(requested_tenant) == (
            principal.tenant
        ):
            return
        self.audit.record(
            "auth", principal=principal.user, tenant=principal.tenant, outcome="forbidden"
        )
        raise TenantForbiddenError(
            f"tenant {requested_tenant[:128]!r} is not the tenant of this token"
        )

    def check_rate(self, principal: Principal) -> None:
        """Count one request against the principal's budget; :class:`RateLimitedError` if over."""
        key = f"{principal.tenant or ''}\x00{principal.user}"
        try:
            self.limiter.check(key)
        except RateLimitedError:
            self.audit.record(
                "rate_limit", principal=principal.user, tenant=principal.tenant, outcome="limited"
            )
            raise

    # ------------------------------------------------------------------ search

    def search(
        self,
        principal: Principal,
        query: str,
        *,
        top_k: int = 8,
        filters: SearchFilters = NO_FILTERS,
        rerank: bool | None = None,
        stages: StageOptions | None = None,
    ) -> SearchOutcome:
        """The best ``top_k`` passages ``principal`` may read, with citations.

        :raises InvalidRequestError: empty or over-long query, ``top_k`` out of range.
        """
        started = time.perf_counter()
        self._check_query(query, top_k)
        self.maybe_refresh()
        stages = stages or StageOptions(rerank=rerank)
        self._search_slots.acquire()
        try:
            return self._search_in_slot(principal, query, top_k, filters, stages, started)
        finally:
            self._search_slots.release()

    def _search_in_slot(
        self,
        principal: Principal,
        query: str,
        top_k: int,
        filters: SearchFilters,
        stages: StageOptions,
        started: float,
    ) -> SearchOutcome:
        use_rerank = self.retrieval.rerank if stages.rerank is None else stages.rerank
        depth = max(3 * top_k, 24)
        queued = time.perf_counter()
        self._stage.expand_s = 0.0
        try:
            passages, ranked = self.searcher.search_ranked(query, principal, depth, filters)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        searched = time.perf_counter()
        fused_ids = {h.chunk_id for h in ranked.lexical} | {h.chunk_id for h in ranked.dense}
        acl_dropped = max(0, min(depth, len(fused_ids)) - len(passages))

        # The records the searcher read and checked against the principal's ACL (one
        # read per passage, not two); a searcher that does not hand them over gets
        # them read here, and a passage without a record is dropped.
        records = ranked.records
        missing = [p.chunk_id for p in passages if p.chunk_id not in records]
        if missing:
            records = {**records, **{r.chunk_id: r for r in self.index.get_chunks(missing)}}
        passages = [p for p in passages if p.chunk_id in records]
        dense = {h.chunk_id: h.score for h in ranked.dense}
        lexical = {h.chunk_id: h.score for h in ranked.lexical}
        candidates = [
            Candidate(p, p.score, dense.get(p.chunk_id), lexical.get(p.chunk_id)) for p in passages
        ]
        evidence = evidence_scores(query, candidates)
        evidence_of = {c.passage.chunk_id: e for c, e in zip(candidates, evidence, strict=True)}
        if use_rerank and candidates:
            if isinstance(self.reranker, EvidenceReranker):
                order = sorted(
                    zip(candidates, evidence, strict=True), key=lambda ce: -ce[1]
                )  # stable: ties keep the fused order
            else:
                order = rerank_candidates(query, candidates, self.reranker)
        else:
            order = [(c, c.fused) for c in candidates]
        reranked = time.perf_counter()

        items = [
            _ranked(records[c.passage.chunk_id], c.passage, score, evidence_of[c.passage.chunk_id])
            for c, score in order
        ]
        if stages.diversify:
            items, stats = diversify(
                items,
                max_per_document=self.retrieval.max_passages_per_document,
                merge=self.retrieval.merge_adjacent,
            )
        else:
            stats = DiversifyStats()
        items = items[:top_k]
        best = max((i.evidence for i in items), default=None)
        results = [_result(i) for i in items]
        merged = time.perf_counter()
        took_ms = (merged - started) * 1000.0
        self.audit.record(
            "search",
            principal=principal.user,
            tenant=principal.tenant,
            query=query,
            chunk_ids=[cid for r in results for cid in r.chunk_ids],
            latency_ms=took_ms,
        )
        expand_s = self._stage.expand_s
        return SearchOutcome(
            results=results,
            low_confidence=best is None or best < self.low_confidence_threshold,
            took_ms=took_ms,
            best_evidence=best,
            filtered_out={
                "acl_recheck": acl_dropped,
                "merged": stats.merged,
                "per_document_cap": stats.capped,
            },
            stage_seconds={
                "queue": queued - started,
                "expand": expand_s,
                "search": max(searched - queued - expand_s, 0.0),
                "rerank": reranked - searched,
                "merge": merged - reranked,
                "audit": time.perf_counter() - merged,
            },
        )

    def _check_query(self, query: str, top_k: int) -> None:
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("query must be a non-empty string")
        if len(query) > self.api.max_query_chars:
            raise InvalidRequestError(
                f"query is {len(query)} characters long; the limit is {self.api.max_query_chars}"
            )
        if "\x00" in query:
            raise InvalidRequestError("query must not contain NUL characters")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequestError(
                f"top_k must be an integer in [1, {MAX_TOP_K}], got {top_k!r}"
            )

    # ------------------------------------------------------------------ documents

    def document(
        self, principal: Principal, doc_id: str, *, around: str | None = None, window: int = 1
    ) -> DocumentView:
        """A document's metadata and, with ``around``, that chunk and its readable neighbours.

        :raises DocumentNotFoundError: absent, not readable, or ``around`` not a readable
            chunk of this document (one message for all, so nothing leaks).
        """
        started = time.perf_counter()
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_DOC_ID_CHARS:
            raise InvalidRequestError(
                f"doc_id must be a non-empty string of at most {MAX_DOC_ID_CHARS} characters"
            )
        if not 0 <= window <= 5:
            raise InvalidRequestError(f"window must be within [0, 5], got {window}")
        self.maybe_refresh()
        reader = self.searcher.expand(principal)
        readable = [c for c in self.index.document_chunks(doc_id) if c.acl.permits(reader)]
        if not readable or (around is not None and around not in {c.chunk_id for c in readable}):
            self.audit.record(
                "document",
                principal=principal.user,
                tenant=principal.tenant,
                doc_id=doc_id,
                outcome="not_found",
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
            raise DocumentNotFoundError(f"document {doc_id[:128]!r} not found")
        context = None
        if around is not None:
            centre = next(c.ord for c in readable if c.chunk_id == around)
            context = [
                _result(_ranked(c, passage_from_record(c, 0.0), 0.0, 0.0))
                for c in readable
                if abs(c.ord - centre) <= window
            ]
        first = readable[0]
        self.audit.record(
            "document",
            principal=principal.user,
            tenant=principal.tenant,
            doc_id=doc_id,
            chunk_ids=[r.chunk_id for r in context or ()],
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        return DocumentView(
            doc_id=first.doc_id,
            source=first.source,
            title=first.title,
            uri=first.uri,
            path=first.path,
            doc_type=first.doc_type,
            doc_version=first.doc_version,
            modified_at=first.modified_at,
            chunk_count=len(readable),
            context=context,
        )

    # ------------------------------------------------------------------ operations

    def maybe_refresh(self) -> None:
        """Pick up new index commits, at most once per ``refresh_interval_s``."""
        refresh = getattr(self.index, "refresh", None)
        if refresh is None:
            return
        now = self._clock()
        if now - self._last_refresh < self._refresh_interval_s:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another request is refreshing; this one answers from the current state
        try:
            self._last_refresh = now
            refresh()
        finally:
            self._refresh_lock.release()

    def readiness(self) -> dict[str, bool]:
        """``index``: the index answers; ``model``: the query model is loaded."""
        try:
            self.index.stats()
            index_ok = True
        except Exception as exc:  # any failure to read the index means "not ready"
            logger.warning("readiness: the index is not readable: %s", exc)
            index_ok = False
        return {"index": index_ok, "model": bool(self._is_model_ready())}

    def index_stats(self) -> IndexStats:
        return self.index.stats()

    def close(self) -> None:
        self.audit.close()
        self.index.close()


def _default_concurrency() -> int:
    """One search per core: chosen by measurement (docs/benchmarks.md#retrieval-service-latest)."""
    return os.cpu_count() or 1


def _ranked(record: ChunkRecord, passage: Passage, score: float, evidence: float) -> RankedPassage:
    return RankedPassage(
        passage=passage,
        score=float(score),
        evidence=float(evidence),
        first_ord=record.ord,
        last_ord=record.ord,
        chunk_ids=(record.chunk_id,),
        doc_type=record.doc_type,
        risk=risk_of(record),
    )


def passages_of(outcome: SearchOutcome) -> Sequence[Passage]:
    """The results as plain passages (for :mod:`retrieval.evaluate`)."""
    return [
        Passage(r.chunk_id, r.doc_id, r.source, r.text, r.score, r.citation)
        for r in outcome.results
    ]
