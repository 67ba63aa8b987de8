"""What a connector hands to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from trove.acl import Acl


@dataclass(frozen=True)
class SourceDocument:
    """One document as the source system sees it, before parsing.

    ``doc_id`` is stable across runs (``{source}:{relative path}`` for files);
    ``version`` changes whenever the content changes (a content hash for files).
    """

    doc_id: str
    source: str
    path: str  # relative to the source root, POSIX separators
    uri: str
    title: str
    version: str
    size: int
    modified_at: datetime | None
    doc_type: str  # lower-case file extension without the dot ("pdf", "md", ...)
    acl: Acl
    local_path: Path | None = None  # where the bytes can be read, for local sources


@dataclass(frozen=True)
class DocumentFailure:
    """A document that could not be read or parsed, with the reason."""

    doc_id: str
    path: str
    reason: str
