"""Configuration of retrieval (fusion, reranking, passages) and of the HTTP API and MCP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from core.config import StrictModel


class RetrievalConfig(StrictModel):
    # Chosen by measurement over every golden set at once
    # (docs/benchmarks.md#retrieval-quality): document-level z-score fusion at 0.55 dense over 100
    # candidates, one passage per document, had the best worst-set nDCG@10
    # (`trove bench quality`).
    fusion: Literal["rrf", "blend", "zscore"] = "zscore"
    rrf_k: int = Field(default=60, ge=1)
    # Weight of the dense retriever in fusion (lexical gets 1 - dense_weight).
    dense_weight: float = Field(default=0.55, ge=0.0, le=1.0)
    # How many candidates each retriever contributes before fusion.
    candidates: int = Field(default=100, ge=1, le=1000)
    # Fuse per document: a document ranks by its best passage in each retriever's
    # list (retrieval.fusion.fuse_by_document); False fuses passage by passage.
    document_fusion: bool = True
    # At most this many passages of one document in a first-stage search's top k
    # (`trove search`, `trove eval`, Searcher.search); None: no cap. The service
    # caps with max_passages_per_document instead, after merging adjacent chunks.
    search_max_per_document: int | None = Field(default=1, ge=1)
    # Rerank after fusion: a sentence-transformers CrossEncoder (local path or
    # name) when set, otherwise a default that needs no extra model weights.
    reranker: str | None = None
    rerank: bool = True
    max_passages_per_document: int = Field(default=3, ge=1)
    merge_adjacent: bool = True
    # Below this best score a search is flagged `low_confidence`.
    low_confidence_threshold: float | None = None


class ApiConfig(StrictModel):
    """The HTTP API and MCP server: JWT verification, limits, audit log."""

    jwt_secret: SecretStr | None = None  # HS256; also TROVE_API__JWT_SECRET
    jwt_public_key_file: Path | None = None  # RS256 PEM
    jwks_file: Path | None = None  # RS256 JWKS (keys chosen by `kid`)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_body_bytes: int = Field(default=65_536, ge=1024)
    max_query_chars: int = Field(default=2_000, ge=1)
    rate_limit_per_minute: int = Field(default=120, ge=1)
    # Failed authentications (401) per client address per minute before its 429s.
    unauthenticated_rate_limit_per_minute: int = Field(default=60, ge=1)
    audit_log: Path | None = Path(".trove/audit.jsonl")
    audit_log_queries: bool = False  # raw query text in the audit log (off: a hash only)
    # Searches answered at once per server process; the rest wait for a slot. None:
    # one per CPU core (chosen by measurement: docs/benchmarks.md#retrieval-service-latest).
    max_concurrent_searches: int | None = Field(default=None, ge=1)

    @field_validator("audit_log", "jwt_public_key_file", "jwks_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `TROVE_API__AUDIT_LOG=` (empty) means "no audit log", not "the config folder".
        return None if isinstance(value, str) and not value.strip() else value
