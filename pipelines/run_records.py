"""What the stages of one run record, and the run summary made from it.

Each stage of a run may run in its own process (a Dagster step), so what one
stage tells a later one goes through the staging store, as these records:

* a :class:`StageResult` per stage call: its counts, failures, duration, warnings;
* the stage's counts for the summary (:class:`ScanCounts`, :class:`ParseCounts`,
  :class:`ChunkCounts`, :class:`ScreenCounts`, :class:`TagCounts`,
  :class:`EmbedCounts`), all of them together a :class:`RunCounters`;
* what the scan leaves the write stage to commit with the index: a
  :class:`PendingCommit` (the cursor, documents to retry, the index generation
  checked) and its :class:`RepairPlan` when the index disagreed with the manifest;
* the write stage's :class:`WriteCounts`, and with them the :class:`RunSummary`
  that ``trove ingest`` reports and the store keeps per run (:class:`RecordedRun`).

Durations stay in :class:`StageResult` (Dagster shows them per step): a run
summary holds only what an idle re-sync (:mod:`pipelines.idle`) records
identically, so that both paths leave the same state behind.

The JSON each record writes is the format earlier versions wrote; reading fills
what an older store lacks with zeros and ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pipelines.records import ChangeClass, FailedDocument, QuarantinedDocument
from retrieval.index.base import IndexGeneration


class Stage(StrEnum):
    """The ingestion stages that record counts for the run summary, in run order."""

    SCAN = "scan"
    PARSE = "parse"
    CHUNK = "chunk"
    SCREEN = "screen"
    TAG = "tag"
    EMBED = "embed"


@dataclass
class StageResult:
    """What a stage did: counts for metadata and summaries, failures with reasons."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: list[FailedDocument] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the stage finished, but not everything (e.g. a cut-short listing)
    warnings: list[str] = field(default_factory=list)  # worth a line in the log (an index repair)


class StageCounts(Protocol):
    """A stage's counts, persisted per run in the staging store."""

    stage: ClassVar[Stage]

    def to_dict(self) -> dict[str, Any]: ...


def _ints(data: Mapping[str, Any], names: Iterable[str]) -> dict[str, int]:
    return {name: int(data.get(name, 0)) for name in names}


@dataclass(frozen=True)
class ScanCounts:
    """The change set by class, and what the listing and the index check found."""

    stage: ClassVar[Stage] = Stage.SCAN

    changes: Mapping[ChangeClass, int] = field(default_factory=dict)
    documents_seen: int = 0
    fetch_failures: int = 0
    permission_sync: int = 0  # 1 when this run listed every id to catch ACL drift and deletions
    # Set only when the index disagreed with the manifest (see pipelines.index_check).
    index_missing_documents: int | None = None
    index_stale_documents: int | None = None
    index_orphaned_documents: int | None = None
    refetched: int | None = None

    def __post_init__(self) -> None:
        # Every class present, so that equal counts compare equal however they were given.
        full = {c: int(self.changes.get(c, 0)) for c in ChangeClass}
        object.__setattr__(self, "changes", full)

    def of(self, change: ChangeClass) -> int:
        return self.changes.get(change, 0)

    def to_dict(self) -> dict[str, int]:
        data = {str(c): self.of(c) for c in ChangeClass}
        data.update(
            documents_seen=self.documents_seen,
            fetch_failures=self.fetch_failures,
            permission_sync=self.permission_sync,
        )
        repair = {
            "index_missing_documents": self.index_missing_documents,
            "index_stale_documents": self.index_stale_documents,
            "index_orphaned_documents": self.index_orphaned_documents,
            "refetched": self.refetched,
        }
        data.update({k: v for k, v in repair.items() if v is not None})
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanCounts:
        def optional(name: str) -> int | None:
            return int(data[name]) if data.get(name) is not None else None

        return cls(
            changes={c: int(data.get(str(c), 0)) for c in ChangeClass},
            documents_seen=int(data.get("documents_seen", 0)),
            fetch_failures=int(data.get("fetch_failures", 0)),
            permission_sync=int(data.get("permission_sync", 0)),
            index_missing_documents=optional("index_missing_documents"),
            index_stale_documents=optional("index_stale_documents"),
            index_orphaned_documents=optional("index_orphaned_documents"),
            refetched=optional("refetched"),
        )


@dataclass(frozen=True)
class ParseCounts:
    stage: ClassVar[Stage] = Stage.PARSE

    documents_parsed: int = 0
    failures: tuple[FailedDocument, ...] = ()

    @property
    def documents_failed(self) -> int:
        return len(self.failures)

    def counts(self) -> dict[str, int]:
        return {
            "documents_parsed": self.documents_parsed,
            "documents_failed": self.documents_failed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts(), "failures": [f.to_dict() for f in self.failures]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParseCounts:
        failures = tuple(FailedDocument.from_dict(f) for f in data.get("failures") or ())
        return cls(int(data.get("documents_parsed", 0)), failures)


@dataclass(frozen=True)
class ChunkCounts:
    stage: ClassVar[Stage] = Stage.CHUNK

    chunks: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"chunks": self.chunks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkCounts:
        return cls(**_ints(data, ("chunks",)))


_PII_PREFIX = "pii_"
_SCREEN_FIELDS = ("chunks_screened", "injection_flagged", "injection_dropped", "pii_chunks_dropped")


@dataclass(frozen=True)
class ScreenCounts:
    """Content safety: PII found per type (counts only, never values), injection verdicts."""

    stage: ClassVar[Stage] = Stage.SCREEN

    pii_found: Mapping[str, int] = field(default_factory=dict)
    chunks_screened: int = 0
    injection_flagged: int = 0
    injection_dropped: int = 0
    pii_chunks_dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        data = {f"{_PII_PREFIX}{kind}": n for kind, n in self.pii_found.items()}
        data.update(
            chunks_screened=self.chunks_screened,
            injection_flagged=self.injection_flagged,
            injection_dropped=self.injection_dropped,
            pii_chunks_dropped=self.pii_chunks_dropped,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScreenCounts:
        pii = {
            k.removeprefix(_PII_PREFIX): int(v)
            for k, v in data.items()
            if k.startswith(_PII_PREFIX) and k not in _SCREEN_FIELDS
        }
        return cls(pii, **_ints(data, _SCREEN_FIELDS))


@dataclass(frozen=True)
class TagCounts:
    stage: ClassVar[Stage] = Stage.TAG

    chunks_tagged: int = 0
    chunks_fail_closed: int = 0  # tagged with an ACL nobody can read
    acl_only: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "chunks_tagged": self.chunks_tagged,
            "chunks_fail_closed": self.chunks_fail_closed,
            "acl_only": self.acl_only,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagCounts:
        return cls(**_ints(data, ("chunks_tagged", "chunks_fail_closed", "acl_only")))


@dataclass(frozen=True)
class EmbedCounts:
    stage: ClassVar[Stage] = Stage.EMBED

    chunks_embedded: int = 0
    chunks_reused: int = 0  # the vector came from the embedding cache

    def to_dict(self) -> dict[str, int]:
        return {"chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbedCounts:
        return cls(**_ints(data, ("chunks_embedded", "chunks_reused")))


@dataclass(frozen=True)
class WriteCounts:
    """What the write stage applied to the index and committed to the manifest."""

    chunks_written: int = 0
    documents_indexed: int = 0
    documents_deleted: int = 0
    acl_updates: int = 0
    documents_rewritten: int = 0  # lost by the index, written again from the state folder
    documents_refetched: int = 0  # lost by the index, parsed again from the source
    orphans_removed: int = 0  # in the index, not in the manifest
    documents_not_repaired: int = 0  # lost by the index and still missing (e.g. parsing failed)

    def to_dict(self) -> dict[str, int]:
        return {
            "chunks_written": self.chunks_written,
            "documents_indexed": self.documents_indexed,
            "documents_deleted": self.documents_deleted,
            "acl_updates": self.acl_updates,
            "documents_rewritten": self.documents_rewritten,
            "documents_refetched": self.documents_refetched,
            "orphans_removed": self.orphans_removed,
            "documents_not_repaired": self.documents_not_repaired,
        }


@dataclass(frozen=True)
class RepairPlan:
    """What a run does about an index that disagrees with the manifest."""

    reason: str  # IndexCheck.describe(): what differs and why
    to_rewrite: tuple[str, ...] = ()  # missing or stale documents
    orphans: tuple[str, ...] = ()  # documents the index holds and the manifest does not
    refetched: tuple[str, ...] = ()  # of to_rewrite, those parsed again (no whole copy kept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "to_rewrite": list(self.to_rewrite),
            "orphans": list(self.orphans),
            "refetched": list(self.refetched),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RepairPlan | None:
        if not data:
            return None
        return cls(
            data["reason"],
            tuple(data.get("to_rewrite", ())),
            tuple(data.get("orphans", ())),
            tuple(data.get("refetched", ())),
        )


@dataclass(frozen=True)
class PendingCommit:
    """What the scan leaves for the write stage to commit with the index and the manifest.

    The source's cursor moves only with the index it describes: a run killed
    before the write lists the same changes again.
    """

    cursor: str | None = None
    retry_ids: tuple[str, ...] = ()  # documents whose fetch failed: retried by id next run
    permission_synced_at: datetime | None = None  # set when this run listed every id
    index_checked: bool = False  # the index was compared with the manifest before the scan
    index_generation: IndexGeneration | None = None  # the generation that check saw
    repair: RepairPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "retry_ids": list(self.retry_ids),
            "permission_synced_at": self.permission_synced_at.isoformat()
            if self.permission_synced_at
            else None,
            "index_checked": self.index_checked,
            "index_generation": self.index_generation.to_dict() if self.index_generation else None,
            "repair": self.repair.to_dict() if self.repair else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PendingCommit | None:
        if data is None:
            return None
        synced = data.get("permission_synced_at")
        return cls(
            cursor=data.get("cursor"),
            retry_ids=tuple(data.get("retry_ids") or ()),
            permission_synced_at=datetime.fromisoformat(synced) if synced else None,
            index_checked=bool(data.get("index_checked")),
            index_generation=IndexGeneration.from_dict(data.get("index_generation")),
            repair=RepairPlan.from_dict(data.get("repair")),
        )


@dataclass(frozen=True)
class RunCounters:
    """What every stage of the run in progress recorded for its summary."""

    scan: ScanCounts = field(default_factory=ScanCounts)
    parse: ParseCounts = field(default_factory=ParseCounts)
    chunk: ChunkCounts = field(default_factory=ChunkCounts)
    screen: ScreenCounts = field(default_factory=ScreenCounts)
    tag: TagCounts = field(default_factory=TagCounts)
    embed: EmbedCounts = field(default_factory=EmbedCounts)
    scan_error: str | None = None  # the listing stopped early; the rest waits for the next run
    repair: RepairPlan | None = None

    def stages(self) -> tuple[StageCounts, ...]:
        return (self.scan, self.parse, self.chunk, self.screen, self.tag, self.embed)


@dataclass(frozen=True)
class RepairSummary:
    reason: str
    rewritten_from_state: int
    refetched: int
    orphans_removed: int
    not_repaired: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "rewritten_from_state": self.rewritten_from_state,
            "refetched": self.refetched,
            "orphans_removed": self.orphans_removed,
            "not_repaired": self.not_repaired,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RepairSummary | None:
        if not data:
            return None
        return cls(data["reason"], **_ints(data, _REPAIR_COUNTS))


_REPAIR_COUNTS = ("rewritten_from_state", "refetched", "orphans_removed", "not_repaired")


@dataclass(frozen=True)
class RunSummary:
    """The per-source ingest summary: what ``trove ingest`` prints and the store keeps per run."""

    documents_seen: int = 0
    documents_parsed: int = 0
    # The whole quarantine after the run, not only this run's failures.
    documents_failed: tuple[FailedDocument, ...] = ()
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    unchanged: int = 0  # unchanged, and failed before at the same version
    changed: int = 0
    added: int = 0
    deleted: int = 0
    acl_only: int = 0
    pii_found: Mapping[str, int] = field(default_factory=dict)
    injection_flagged: int = 0
    chunks_dropped: int = 0  # by the injection or the PII policy
    # Set when the source's listing stopped early: what was gathered is indexed
    # and the next run resumes from the last committed batch.
    sync_error: str | None = None
    # Documents written again because the index lacked them or held them otherwise
    # than the manifest (from the state folder's copy, or parsed again).
    rebuilt: int = 0
    index_repair: RepairSummary | None = None

    @property
    def quarantined(self) -> int:
        return len(self.documents_failed)

    @classmethod
    def of(
        cls, counters: RunCounters, write: WriteCounts, quarantine: Sequence[QuarantinedDocument]
    ) -> RunSummary:
        scan, screen = counters.scan, counters.screen
        repair = counters.repair
        return cls(
            documents_seen=scan.documents_seen,
            documents_parsed=counters.parse.documents_parsed,
            documents_failed=tuple(q.failure for q in quarantine),
            chunks_written=write.chunks_written,
            chunks_embedded=counters.embed.chunks_embedded,
            chunks_reused=counters.embed.chunks_reused,
            unchanged=scan.of(ChangeClass.UNCHANGED) + scan.of(ChangeClass.FAILED_BEFORE),
            changed=scan.of(ChangeClass.CHANGED),
            added=scan.of(ChangeClass.ADDED),
            deleted=scan.of(ChangeClass.DELETED),
            acl_only=scan.of(ChangeClass.ACL_ONLY),
            pii_found=dict(screen.pii_found),
            injection_flagged=screen.injection_flagged,
            chunks_dropped=screen.injection_dropped + screen.pii_chunks_dropped,
            sync_error=counters.scan_error,
            rebuilt=write.documents_rewritten + write.documents_refetched,
            index_repair=None
            if repair is None
            else RepairSummary(
                reason=repair.reason,
                rewritten_from_state=write.documents_rewritten,
                refetched=write.documents_refetched,
                orphans_removed=write.orphans_removed,
                not_repaired=write.documents_not_repaired,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``trove ingest --json``, and the staging store's ``runs`` table."""
        return {
            "documents_seen": self.documents_seen,
            "documents_parsed": self.documents_parsed,
            "documents_failed": [f.to_dict() for f in self.documents_failed],
            "chunks_written": self.chunks_written,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "added": self.added,
            "deleted": self.deleted,
            "acl_only": self.acl_only,
            "quarantined": self.quarantined,
            "pii_found": dict(self.pii_found),
            "injection_flagged": self.injection_flagged,
            "chunks_dropped": self.chunks_dropped,
            "sync_error": self.sync_error,
            "rebuilt": self.rebuilt,
            "index_repair": self.index_repair.to_dict() if self.index_repair else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """Read a stored summary; keys an older version did not write read as zero or None."""
        counts = _ints(
            data,
            (
                "documents_seen",
                "documents_parsed",
                "chunks_written",
                "chunks_embedded",
                "chunks_reused",
                "unchanged",
                "changed",
                "added",
                "deleted",
                "acl_only",
                "injection_flagged",
                "chunks_dropped",
                "rebuilt",
            ),
        )
        return cls(
            documents_failed=tuple(
                FailedDocument.from_dict(f) for f in data.get("documents_failed") or ()
            ),
            pii_found={k: int(v) for k, v in (data.get("pii_found") or {}).items()},
            sync_error=data.get("sync_error"),
            index_repair=RepairSummary.from_dict(data.get("index_repair")),
            **counts,
        )


@dataclass(frozen=True)
class RecordedRun:
    """A completed sync as the staging store keeps it."""

    finished_at: datetime
    summary: RunSummary

    def to_dict(self) -> dict[str, Any]:
        return {"finished_at": self.finished_at.isoformat(), **self.summary.to_dict()}
