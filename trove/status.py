"""`trove status`: freshness and health per source, and the index's size.

Each source's manifest is also compared with the index, document by document
(:func:`pipelines.index_check.check_index`): when they disagree (the index was
deleted, replaced or restored from an older copy) the source's ``index`` entry
says how, and the report's ``problems`` list it as an error with the command
that fixes it; ``ok`` is false and the CLI exits 1.

:func:`status_report` builds the report as records; :meth:`StatusReport.to_dict`
renders it as ``trove status --json`` prints it (and :func:`status` returns it),
:func:`status_lines` as the text ``trove status`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rich.markup import escape

from connectors.errors import ConnectorError
from connectors.registry import open_connector
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from pipelines.index_check import CORRUPT_INDEX_FIX, FIX, IndexCheck, check_index
from pipelines.ocr import INSTALL_HINT, ocr_tools
from pipelines.records import ChangeClass, FailureReason, QuarantinedDocument, count_changes
from pipelines.store import StagingStore, StateUnreadableError
from pipelines.sync import compute_change_set
from retrieval.directory import GroupDirectory
from retrieval.index.base import IndexBackendError, IndexCorruptError, IndexNotFoundError
from retrieval.index.factory import open_index
from trove.commands.index import status_of
from trove.config import Settings

STATE_FIX = "move the source's staging store aside, then trove ingest (it indexes the source again)"

FreshnessState = Literal["no_sla", "never_synced", "stale", "fresh"]
# What `trove status` counts as pending, in the order it lists them.
PENDING_CHANGES = (
    ChangeClass.ADDED,
    ChangeClass.CHANGED,
    ChangeClass.DELETED,
    ChangeClass.ACL_ONLY,
)


@dataclass(frozen=True)
class Freshness:
    sla_seconds: float | None
    age_seconds: float | None  # since the last sync finished (None: never synced)
    state: FreshnessState

    def to_dict(self) -> dict[str, Any]:
        return {
            "sla_seconds": self.sla_seconds,
            "age_seconds": self.age_seconds,
            "state": self.state,
        }


@dataclass(frozen=True)
class PendingChanges:
    """What the next sync would do, or why that was not worked out."""

    counts: Mapping[ChangeClass, int] = field(default_factory=dict)
    not_computed: str | None = None  # a remote source: not listed by a status call
    error: str | None = None  # the dry listing failed

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        if self.not_computed is not None:
            return {"not_computed": self.not_computed}
        return {str(c): self.counts.get(c, 0) for c in PENDING_CHANGES}


@dataclass(frozen=True)
class OcrStatus:
    """The source's OCR mode, and whether this machine can run it (``missing``: why not)."""

    mode: str
    languages: tuple[str, ...]
    missing: str | None

    @property
    def available(self) -> bool:
        return self.missing is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "languages": list(self.languages),
            "available": self.available,
            "missing": self.missing,
            "how_to_enable": INSTALL_HINT if self.missing else None,
        }


@dataclass(frozen=True)
class SourceStatus:
    """One source's freshness and health, from its staging store."""

    last_sync: datetime | None
    documents: int
    chunks: int
    pending: PendingChanges
    failures: tuple[QuarantinedDocument, ...]
    freshness: Freshness
    schedule: str | None
    type: str
    groups: Mapping[str, object] | None  # the group directory's entry, for a source with groups
    last_sync_error: str | None
    ocr: OcrStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "documents": self.documents,
            "chunks": self.chunks,
            "pending": self.pending.to_dict(),
            "failures": [
                {
                    "path": f.path,
                    "reason": f.reason,
                    "reason_class": str(f.reason_class),
                    "version": f.version,
                    "first_seen": f.first_seen.isoformat(),
                    "last_seen": f.last_seen.isoformat(),
                }
                for f in self.failures
            ],
            "freshness": self.freshness.to_dict(),
            "schedule": self.schedule,
            "type": self.type,
            "groups": dict(self.groups) if self.groups is not None else None,
            "last_sync_error": self.last_sync_error,
            "ocr": self.ocr.to_dict(),
        }


@dataclass(frozen=True)
class IndexAgreement:
    """The index against one source's manifest: ``ok`` None when it could not be checked."""

    ok: bool | None
    error: str | None = None
    fix: str | None = None  # the command that repairs it, when not ok
    check: IndexCheck | None = None  # the comparison, when one was made

    @classmethod
    def of(cls, check: IndexCheck) -> IndexAgreement:
        if check.ok:
            return cls(True, check=check)
        return cls(False, check.describe(), FIX, check)

    def to_dict(self) -> dict[str, Any]:
        if self.check is not None:
            return self.check.to_dict()
        data: dict[str, Any] = {"ok": self.ok, "error": self.error}
        if self.fix is not None:
            data["fix"] = self.fix
        return data


@dataclass(frozen=True)
class SourceReport:
    """A source in the report: its status (None when its state is unreadable) and its index."""

    status: SourceStatus | None
    index: IndexAgreement

    def to_dict(self) -> dict[str, Any]:
        base = self.status.to_dict() if self.status is not None else {}
        return {**base, "index": self.index.to_dict()}


@dataclass(frozen=True)
class Problem:
    """An error in the report, with the command that fixes it."""

    source: str
    error: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "error": self.error, "fix": self.fix}


@dataclass(frozen=True)
class Hint:
    """Advice that is not an error."""

    source: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "hint": self.hint}


@dataclass(frozen=True)
class StatusReport:
    sources: Mapping[str, SourceReport]
    index: Mapping[str, Any]  # the index's own state (trove.commands.index.status_of)
    problems: tuple[Problem, ...]
    hints: tuple[Hint, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as ``trove status --json`` prints it."""
        return {
            "sources": {name: s.to_dict() for name, s in self.sources.items()},
            "index": dict(self.index),
            "problems": [p.to_dict() for p in self.problems],
            "hints": [h.to_dict() for h in self.hints],
            "ok": self.ok,
        }


def _freshness(source: SourceConfig, last_sync: datetime | None, now: datetime) -> Freshness:
    age = (now - last_sync).total_seconds() if last_sync else None
    sla = source.freshness_sla.total_seconds() if source.freshness_sla else None
    state: FreshnessState
    if sla is None:
        state = "no_sla"
    elif age is None:
        state = "never_synced"
    else:
        state = "stale" if age > sla else "fresh"
    return Freshness(sla, age, state)


def _pending(source: SourceConfig, store: StagingStore) -> PendingChanges:
    """What the next sync would do: a dry run for folders (nothing fetched or written).

    Remote sources are not listed here: a dry run would crawl or page through
    the remote system, which is not what a status call should cost.
    """
    if source.type != "filesystem":
        return PendingChanges(not_computed="remote source: `trove ingest` syncs it")
    connector = open_connector(source.scope(), source.connector_settings)
    try:
        scan = compute_change_set(
            source,
            store,
            AclPolicy.from_config(source.acl),
            connector,
            fetch=False,
            permission_sync=False,
        )
    except ConnectorError as exc:
        return PendingChanges(error=str(exc))
    finally:
        connector.close()
    return PendingChanges(count_changes(scan.rows))


def _groups(settings: Settings, source: SourceConfig) -> Mapping[str, object] | None:
    if not source.has_groups:
        return None
    directory = GroupDirectory.in_state_dir(settings.state.path)
    try:
        return directory.status().get(source.name)
    finally:
        directory.close()


def source_status(settings: Settings, source: SourceConfig, now: datetime) -> SourceStatus:
    store = StagingStore.for_source(settings.state.path, source.name)
    try:
        manifest = store.manifest()
        last = store.last_run()
        last_sync = last.finished_at if last else None
        return SourceStatus(
            last_sync=last_sync,
            documents=sum(1 for e in manifest.values() if e.state == "indexed"),
            chunks=sum(len(e.chunk_ids) for e in manifest.values()),
            pending=_pending(source, store),
            failures=tuple(store.failures()),
            freshness=_freshness(source, last_sync, now),
            schedule=source.schedule,
            type=source.type,
            groups=_groups(settings, source),
            last_sync_error=last.summary.sync_error if last else None,
            ocr=ocr_status(source),
        )
    finally:
        store.close()


def ocr_status(source: SourceConfig) -> OcrStatus:
    """The source's OCR mode, and whether this machine can run it (``missing``: why not)."""
    missing = ocr_tools().missing(source.ocr_languages, pdf=True)
    return OcrStatus(source.ocr, tuple(source.ocr_languages), missing)


def hints_of(sources: Mapping[str, SourceReport]) -> tuple[Hint, ...]:
    """Advice that is not an error: documents waiting for OCR on a machine without it."""
    hints = []
    for name, report in sources.items():
        s = report.status
        if s is None:
            continue
        waiting = [f for f in s.failures if f.reason_class == FailureReason.NEEDS_OCR]
        if waiting and s.ocr.mode == "off":
            hint = "set `ocr: auto` on the source, then trove ingest"
        elif waiting and not s.ocr.available:
            hint = f"{s.ocr.missing}: {INSTALL_HINT}, then trove ingest"
        else:
            continue
        hints.append(Hint(name, f"{len(waiting)} document(s) need OCR to be read: {hint}"))
    return tuple(hints)


def index_status(settings: Settings) -> dict[str, Any]:
    """Size and health of the configured index (``ready`` false with an ``error`` if absent)."""
    return status_of(settings)


def index_agreement(settings: Settings) -> dict[str, IndexAgreement]:
    """Per source: the index compared with its manifest (see the module doc).

    An index that is not there counts as empty (a manifest listing chunks then
    disagrees with it); one that cannot be reached or read is reported as not
    checked, with the reason: `trove status` shows the index's error beside it.
    """
    index = None
    try:
        index = open_index(settings.index)
    except IndexNotFoundError:
        pass
    except IndexCorruptError as exc:
        unreadable = IndexAgreement(False, f"the index is unreadable: {exc}", CORRUPT_INDEX_FIX)
        return {s.name: unreadable for s in settings.sources}
    except (IndexBackendError, ValueError, OSError) as exc:
        return {s.name: IndexAgreement(None, f"not checked: {exc}") for s in settings.sources}
    try:
        out: dict[str, IndexAgreement] = {}
        for source in settings.sources:
            try:
                store = StagingStore.for_source(settings.state.path, source.name)
            except StateUnreadableError as exc:
                out[source.name] = IndexAgreement(False, str(exc), STATE_FIX)
                continue
            try:
                check = check_index(store, index, source.name, thorough=True)
                out[source.name] = IndexAgreement.of(check)
            finally:
                store.close()
        return out
    finally:
        if index is not None:
            index.close()


def problems_of(sources: Mapping[str, SourceReport]) -> tuple[Problem, ...]:
    """The report's errors, each with the command that fixes it."""
    return tuple(
        Problem(name, s.index.error or "", s.index.fix or "")
        for name, s in sources.items()
        if s.index.ok is False
    )


def _source_report(
    settings: Settings, source: SourceConfig, now: datetime, agreement: IndexAgreement
) -> SourceReport:
    try:
        return SourceReport(source_status(settings, source, now), agreement)
    except StateUnreadableError as exc:
        return SourceReport(None, IndexAgreement(False, str(exc), STATE_FIX))


def status_report(settings: Settings, now: datetime | None = None) -> StatusReport:
    now = now or datetime.now(UTC)
    agreement = index_agreement(settings)
    sources = {
        s.name: _source_report(settings, s, now, agreement[s.name]) for s in settings.sources
    }
    return StatusReport(
        sources=sources,
        index=index_status(settings),
        problems=problems_of(sources),
        hints=hints_of(sources),
    )


def status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The report as ``trove status --json`` prints it (see :func:`status_report`)."""
    return status_report(settings, now).to_dict()


def _pending_text(pending: PendingChanges) -> str:
    if pending.error is not None:
        return pending.error
    if pending.not_computed is not None:
        return pending.not_computed
    return ", ".join(f"{n} {c}" for c, n in pending.to_dict().items() if n) or "none"


def status_lines(report: StatusReport) -> list[str]:
    """The report as ``trove status`` prints it: one line per source (and per failure),
    the index, then hints and errors. Lines use Rich markup; what comes from a source,
    the index or a message is escaped (a path may hold ``[``)."""
    lines: list[str] = []
    for name, source in report.sources.items():
        s = source.status
        if s is None:
            continue  # its state is unreadable: the ERROR line below says so
        fresh = s.freshness
        age = f"{fresh.age_seconds / 60:.0f} min ago" if fresh.age_seconds is not None else ""
        last = s.last_sync.isoformat() if s.last_sync else "never"
        lines.append(
            f"[bold]{escape(name)}[/]: last sync {last} {age} "
            f"({fresh.state.replace('_', ' ')}), {s.documents} documents, "
            f"{s.chunks} chunks, "
            f"pending: {escape(_pending_text(s.pending))}, {len(s.failures)} failed"
        )
        lines.extend(
            f"  [yellow]failed[/] {escape(f.path)}: {escape(f.reason)}" for f in s.failures
        )
    i = report.index
    if i["ready"]:
        lines.append(f"index ({i['backend']}): {i['chunks']} chunks, {i['documents']} documents")
    else:
        lines.append(f"index ({i['backend']}): not ready: {escape(str(i['error']))}")
    lines.extend(f"[bold yellow]HINT[/] {escape(h.source)}: {escape(h.hint)}" for h in report.hints)
    lines.extend(
        f"[bold red]ERROR[/] {escape(p.source)}: {escape(p.error)}. Fix: {escape(p.fix)}"
        for p in report.problems
    )
    return lines
