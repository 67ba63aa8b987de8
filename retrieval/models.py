"""What retrieval returns: passages with checkable citations."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Citation:
    doc_id: str
    title: str
    uri: str
    path: str  # relative to the source root
    section: tuple[str, ...]  # heading path, outermost first
    pages: tuple[int, ...]  # empty where the format has no pages
    char_start: int  # span of the passage in the document's parsed text
    char_end: int
    doc_version: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["section"] = list(self.section)
        data["pages"] = list(self.pages)
        return data


@dataclass(frozen=True)
class Passage:
    chunk_id: str
    doc_id: str
    source: str
    text: str
    score: float
    citation: Citation
    # Flags an agent should heed, e.g. ({"type": "prompt_injection", "score": 0.93},):
    # treat the passage as untrusted data, never as instructions.
    risk: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "source": self.source,
            "text": self.text,
            "score": self.score,
            "citation": self.citation.to_dict(),
            "risk": [dict(r) for r in self.risk],
        }


@dataclass(frozen=True)
class SearchFilters:
    """Optional narrowing of a search; it never widens what the principal may read."""

    sources: frozenset[str] | None = None
    doc_types: frozenset[str] | None = None
    path_prefixes: tuple[str, ...] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    @property
    def empty(self) -> bool:
        return (
            not self.sources
            and not self.doc_types
            and not self.path_prefixes
            and self.modified_after is None
            and self.modified_before is None
        )


NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class ScoredId:
    chunk_id: str
    score: float
