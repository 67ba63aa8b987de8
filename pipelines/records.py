"""The documents the stages hand each other, and the documents they could not process.

* :class:`PendingDocument` — one row of a run's change set: a document and its
  :class:`ChangeClass`, decided by the scan (:mod:`pipelines.sync`) and read by
  every later stage. Its :class:`ScannedDocument` is what the scan learnt of the
  document, so that no later stage asks the source again.
* :class:`FailedDocument` — a document a stage could not process this run, with
  its :class:`FailureReason`; :class:`QuarantinedDocument` — the quarantine row
  the staging store keeps for it until a later version is indexed.

The staging store persists a :class:`ScannedDocument` as JSON; :meth:`ScannedDocument.to_json`
writes, and :meth:`ScannedDocument.from_json` reads, the format every earlier version wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from connectors.models import FileIdentity, SourceDocument
from core.acl import Acl


class ChangeClass(StrEnum):
    """What a run does with a document, decided by the scan against the manifest."""

    ADDED = "added"  # new: parsed, chunked, screened, tagged, embedded, written
    CHANGED = "changed"  # a new version: the same, its stale chunks replaced
    UNCHANGED = "unchanged"  # skipped before parsing
    DELETED = "deleted"  # gone from the source: its chunks are removed
    ACL_ONLY = "acl_only"  # same content, another ACL in force: the index's ACLs updated
    FAILED_BEFORE = "failed_before"  # this version failed last time: not retried until it changes
    REWRITE = "rewrite"  # unchanged, but lost by the index: written again from the state folder


# The change classes whose documents are parsed, chunked and embedded.
CONTENT_CHANGES: tuple[ChangeClass, ...] = (ChangeClass.ADDED, ChangeClass.CHANGED)


class FailureReason(StrEnum):
    """Why a document was quarantined, in a word a dashboard can group by."""

    TOO_LARGE = "too_large"  # over limits.max_bytes
    ZIP_BOMB = "zip_bomb"  # archive member count, uncompressed size or ratio over the limits
    ENCRYPTED = "encrypted"  # password-protected PDF, Office file or e-mail
    EMPTY = "empty"  # no bytes, whitespace only, or no extractable text
    UNSUPPORTED = "unsupported"  # no parser for the type (or its optional dependency is missing)
    TYPE_MISMATCH = "type_mismatch"  # the content is not what the extension says
    MALFORMED = "malformed"  # the parser refused the content
    TIMEOUT = "timeout"  # the parser ran past limits.timeout_s and was killed
    PARSER_CRASH = "parser_crash"  # the parser process died or raised an unexpected error
    LIMIT_EXCEEDED = "limit_exceeded"  # pages, characters or elements over the limits
    UNREADABLE = "unreadable"  # not readable at all: permissions, vanished, a fetch that failed
    CHANGED_DURING_SYNC = "changed_during_sync"  # another file, or a link, since the scan read it
    NEEDS_OCR = "needs_ocr"  # only scanned pages or an image, and no OCR to read them
    DECOMPRESSION_BOMB = "decompression_bomb"  # an image over limits.max_image_pixels
    TOO_MANY_PAGES = "too_many_pages"  # more pages to OCR than limits.max_ocr_pages
    OCR_TIMEOUT = "ocr_timeout"  # OCR of one document ran past limits.ocr_timeout_s in total


# The stage that quarantined a document: the scan (it could not be read or fetched) or the parser.
FailureStage = Literal["read", "parse"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class ScannedDocument:
    """A document as the scan recorded it, with the ACL the policy decided for it.

    A document the listing named carries its source metadata (``source`` is set);
    one the scan only knows from the manifest (deleted, or restored from the state
    folder) carries its id, path, and — when it stays indexed — version and ACL.
    """

    doc_id: str
    path: str
    acl: Acl = field(default_factory=Acl.empty)
    version: str | None = None
    source: str | None = None
    uri: str | None = None
    title: str | None = None
    size: int | None = None
    modified_at: datetime | None = None
    doc_type: str | None = None
    local_path: Path | None = None
    author: str | None = None
    identity: FileIdentity | None = None

    @classmethod
    def listed(cls, doc: SourceDocument, acl: Acl) -> ScannedDocument:
        """A document the listing named, under the ACL in force (``acl``, not ``doc.acl``)."""
        return cls(
            doc_id=doc.doc_id,
            path=doc.path,
            acl=acl,
            version=doc.version,
            source=doc.source,
            uri=doc.uri,
            title=doc.title,
            size=doc.size,
            modified_at=doc.modified_at,
            doc_type=doc.doc_type,
            local_path=doc.local_path,
            author=doc.author,
            identity=doc.identity,
        )

    @property
    def is_listed(self) -> bool:
        return self.source is not None

    def to_source_document(self) -> SourceDocument:
        """The document for the parser: its staged bytes and the ACL in force."""
        if self.source is None or self.version is None:
            raise ValueError(f"{self.doc_id} was not listed by the source: nothing to parse")
        return SourceDocument(
            doc_id=self.doc_id,
            source=self.source,
            path=self.path,
            uri=self.uri or "",
            title=self.title or "",
            version=self.version,
            size=self.size or 0,
            modified_at=self.modified_at,
            doc_type=self.doc_type or "",
            acl=self.acl,
            local_path=self.local_path,
            identity=self.identity,
        )

    def to_json(self) -> dict[str, Any]:
        """The staging store's JSON (the keys an earlier version wrote, no others)."""
        if self.is_listed:
            return {
                "doc_id": self.doc_id,
                "source": self.source,
                "path": self.path,
                "uri": self.uri,
                "title": self.title,
                "version": self.version,
                "size": self.size,
                "modified_at": _iso(self.modified_at),
                "doc_type": self.doc_type,
                "acl": self.acl.to_dict(),
                "local_path": str(self.local_path) if self.local_path else None,
                "author": self.author,
                "identity": self.identity.to_dict() if self.identity else None,
            }
        data: dict[str, Any] = {"doc_id": self.doc_id, "path": self.path}
        if self.version is not None:
            data.update({"version": self.version, "acl": self.acl.to_dict()})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScannedDocument:
        return cls(
            doc_id=data["doc_id"],
            path=data["path"],
            acl=Acl.from_dict(data.get("acl")),
            version=data.get("version"),
            source=data.get("source"),
            uri=data.get("uri"),
            title=data.get("title"),
            size=data.get("size"),
            modified_at=_datetime(data.get("modified_at")),
            doc_type=data.get("doc_type"),
            local_path=Path(data["local_path"]) if data.get("local_path") else None,
            author=data.get("author"),
            identity=FileIdentity.from_dict(data.get("identity")),
        )


@dataclass(frozen=True)
class PendingDocument:
    """One document of the run's change set, and what the run does with it."""

    doc_id: str
    change: ChangeClass
    document: ScannedDocument

    @property
    def path(self) -> str:
        return self.document.path

    @property
    def acl(self) -> Acl:
        return self.document.acl


def count_changes(rows: Iterable[PendingDocument]) -> dict[ChangeClass, int]:
    """How many documents of each change class (every class present, zero or not)."""
    counts = dict.fromkeys(ChangeClass, 0)
    for row in rows:
        counts[row.change] += 1
    return counts


@dataclass(frozen=True)
class FailedDocument:
    """A document a stage could not process, and why; its indexed version keeps serving."""

    path: str
    reason: str
    reason_class: FailureReason = FailureReason.MALFORMED

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "reason_class": str(self.reason_class)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailedDocument:
        # Run summaries written before reason classes existed name none: the parser refused it.
        reason_class = FailureReason(data.get("reason_class", FailureReason.MALFORMED))
        return cls(data["path"], data["reason"], reason_class)


@dataclass(frozen=True)
class QuarantinedDocument:
    """A row of the staging store's quarantine: kept until a later version of it is indexed."""

    doc_id: str
    path: str
    version: str | None
    stage: FailureStage
    reason: str
    reason_class: FailureReason
    first_seen: datetime
    last_seen: datetime

    @property
    def failure(self) -> FailedDocument:
        return FailedDocument(self.path, self.reason, self.reason_class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "path": self.path,
            "version": self.version,
            "stage": self.stage,
            "reason": self.reason,
            "reason_class": str(self.reason_class),
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }
