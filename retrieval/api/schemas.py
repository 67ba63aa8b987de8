"""Request and response models of the HTTP API, the MCP tools and the Python client.

Input models (``SearchRequest``, ``SearchKnowledgeArgs``) are separate from output
models (``SearchResponse``, ``DocumentOut``), so internal fields (ACLs, vectors,
evidence scores) never reach a response. Only pydantic here: the client imports
this module without FastAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from retrieval.models import SearchFilters

# Hard ceilings; the configured limits (api.max_query_chars, api.max_body_bytes) are
# enforced by the service and the app, usually lower.
QUERY_MAX_CHARS = 100_000
MAX_FILTER_VALUES = 100

FilterValue = Annotated[str, StringConstraints(min_length=1, max_length=1_000)]


class FiltersIn(BaseModel):
    """Narrowing of a search; filters never widen what the caller may read."""

    model_config = ConfigDict(extra="forbid")

    sources: list[FilterValue] | None = Field(
        default=None, max_length=MAX_FILTER_VALUES, description="Source names to search in."
    )
    paths: list[FilterValue] | None = Field(
        default=None,
        max_length=MAX_FILTER_VALUES,
        description="Path prefixes (relative to the source root), e.g. `handbook/`.",
    )
    doc_types: list[FilterValue] | None = Field(
        default=None, max_length=MAX_FILTER_VALUES, description="File types, e.g. `pdf`, `md`."
    )
    modified_after: datetime | None = Field(
        default=None, description="Inclusive; naive times are UTC."
    )
    modified_before: datetime | None = Field(
        default=None, description="Exclusive; naive times are UTC."
    )

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            sources=frozenset(self.sources) if self.sources else None,
            doc_types=frozenset(self.doc_types) if self.doc_types else None,
            path_prefixes=tuple(self.paths) if self.paths else None,
            modified_after=self.modified_after,
            modified_before=self.modified_before,
        )


class SearchKnowledgeArgs(BaseModel):
    """Arguments of the `search_knowledge` tool (MCP and OpenAI-style function)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=QUERY_MAX_CHARS,
        description="What to look for, in natural language or keywords.",
    )
    top_k: int = Field(default=8, ge=1, le=50, description="How many passages to return.")
    filters: FiltersIn | None = Field(default=None, description="Optional narrowing.")


class SearchRequest(SearchKnowledgeArgs):
    """Body of ``POST /v1/search``.

    Unknown fields are ignored, so an identity smuggled into the body (``user``,
    ``groups``, ``sub``) has no effect: the caller is whoever the bearer token names.
    """

    model_config = ConfigDict(extra="ignore")

    rerank: bool | None = Field(
        default=None, description="Run the rerank stage (default: as configured)."
    )
    tenant: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None,
        description="Optional; must equal the token's tenant (else 403). Never widens access.",
    )


class RiskOut(BaseModel):
    """A risk flag on a passage, e.g. ``{"type": "prompt_injection", "score": 0.93}``."""

    model_config = ConfigDict(extra="allow")

    type: str
    score: float | None = None


class CitationOut(BaseModel):
    doc_id: str
    title: str
    uri: str
    deep_link: str = Field(description="`uri` with `#page=N` (PDF) or a heading anchor.")
    path: str
    section: list[str]
    pages: list[int]
    char_start: int
    char_end: int
    doc_version: str


class ResultOut(BaseModel):
    chunk_id: str = Field(description="The first chunk of the passage.")
    chunk_ids: list[str] = Field(description="Every chunk merged into this passage.")
    doc_id: str
    source: str
    text: str
    score: float
    citation: CitationOut
    risk: list[RiskOut] = Field(default_factory=list)

    @classmethod
    def from_result(cls, r: Any) -> ResultOut:
        c = r.citation
        return cls(
            chunk_id=r.chunk_id,
            chunk_ids=list(r.chunk_ids),
            doc_id=r.doc_id,
            source=r.source,
            text=r.text,
            score=r.score,
            citation=CitationOut(
                doc_id=c.doc_id,
                title=c.title,
                uri=c.uri,
                deep_link=r.deep_link,
                path=c.path,
                section=list(c.section),
                pages=list(c.pages),
                char_start=c.char_start,
                char_end=c.char_end,
                doc_version=c.doc_version,
            ),
            risk=[RiskOut.model_validate(x) for x in r.risk],
        )


class SearchResponse(BaseModel):
    results: list[ResultOut]
    low_confidence: bool = Field(description="The best evidence is weak: say so, or ask.")
    took_ms: float

    @classmethod
    def from_outcome(cls, outcome: Any) -> SearchResponse:
        return cls(
            results=[ResultOut.from_result(r) for r in outcome.results],
            low_confidence=outcome.low_confidence,
            took_ms=round(outcome.took_ms, 3),
        )


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    title: str
    uri: str
    path: str
    doc_type: str
    doc_version: str
    modified_at: datetime | None
    chunk_count: int = Field(description="Chunks of the document the caller may read.")
    context: list[ResultOut] | None = Field(
        default=None, description="With `?around=`: that chunk and its neighbours, in order."
    )

    @classmethod
    def from_view(cls, view: Any) -> DocumentOut:
        return cls(
            doc_id=view.doc_id,
            source=view.source,
            title=view.title,
            uri=view.uri,
            path=view.path,
            doc_type=view.doc_type,
            doc_version=view.doc_version,
            modified_at=view.modified_at,
            chunk_count=view.chunk_count,
            context=None
            if view.context is None
            else [ResultOut.from_result(r) for r in view.context],
        )


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, bool]
