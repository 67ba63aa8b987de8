"""Turn what a connector reports into the run's change set, against the manifest.

One function, :func:`compute_change_set`, for every source type:

1. ``changes(cursor)`` from the last *committed* cursor. Documents are
   classified against the manifest (added, changed, unchanged, ACL-only,
   failed before); explicit deletions are kept. If the listing breaks part way
   (a :class:`~connectors.errors.ConnectorError` after some batches), what was
   gathered is still processed and the cursor stops at the last whole batch:
   the next run resumes there and nothing is skipped. The error is reported.
2. A *complete* listing (filesystem, S3, a finished crawl) deletes what the
   manifest has and the listing did not name.
3. Incremental sources also get the id-only listing (``list_ids``) when a
   permission sync is due: manifest ids it lacks are deleted, and a document
   whose ACL changed without a new version (a Confluence ancestor restricted,
   a SharePoint item re-shared) becomes ``acl_only`` — nothing re-embedded.
   A version the cursor somehow missed, or a path that moved without a new
   version (an ancestor page or folder renamed), is fetched and re-indexed.
4. Bytes are fetched (``fetch``) only for added and changed documents and
   staged as files beside the staging store for the parser. A fetch that
   fails is recorded and retried by id next run, since the cursor has moved on.
5. Given an :class:`~pipelines.index_check.IndexCheck` that found documents
   the index lacks or holds differently from the manifest, those that would be
   ``unchanged`` or ``acl_only`` (or ``failed_before``: their previous version
   serves) become ``rewrite`` — written again from the copy the state folder
   keeps, nothing parsed or embedded — or, without a whole copy (a state folder
   from before it was kept), ``changed``: fetched and parsed again, the vectors
   from the embedding cache. Incremental sources fetch by id the ones their
   listing did not name.

Nothing here writes the manifest or the cursor: the write stage commits both
with the index (see :func:`pipelines.stages.write_pending`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import ChangeBatch, Connector, DocumentStamp
from connectors.errors import ConnectorError, DocumentGone
from connectors.models import DocumentFailure, FileIdentity, SourceDocument
from core.acl import Acl
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from pipelines.index_check import IndexCheck
from pipelines.records import CONTENT_CHANGES, ChangeClass, PendingDocument, ScannedDocument
from pipelines.store import (
    CURSOR,
    PERMISSION_SYNCED_AT,
    RETRY_IDS,
    ManifestEntry,
    StagingStore,
)

log = logging.getLogger(__name__)

ADDED = ChangeClass.ADDED
CHANGED = ChangeClass.CHANGED
UNCHANGED = ChangeClass.UNCHANGED
DELETED = ChangeClass.DELETED
ACL_ONLY = ChangeClass.ACL_ONLY
FAILED_BEFORE = ChangeClass.FAILED_BEFORE
REWRITE = ChangeClass.REWRITE  # the index lost it: written again from the state folder's copy
# What the index lacking a document turns into a rewrite (see the module doc, 5).
_REPAIRABLE = (UNCHANGED, ACL_ONLY, FAILED_BEFORE)

# Stages a document's bytes for the parser: None when it is gone or its fetch failed.
Fetch = Callable[[SourceDocument], SourceDocument | None]


@dataclass
class ChangeScan:
    rows: list[PendingDocument]
    failures: list[DocumentFailure] = field(default_factory=list)
    documents_seen: int = 0
    cursor: str | None = None
    retry_ids: list[str] = field(default_factory=list)
    permission_synced: bool = False
    error: str | None = None  # the listing stopped early; the rest waits for the next run
    refetched: list[str] = field(default_factory=list)  # lost by the index, parsed again


def listed_row(doc: SourceDocument, acl: Acl, change: ChangeClass) -> PendingDocument:
    return PendingDocument(doc.doc_id, change, ScannedDocument.listed(doc, acl))


def manifest_row(
    entry: ManifestEntry, change: ChangeClass, acl: Acl | None = None
) -> PendingDocument:
    """A row for a document known from the manifest only: deleted (no ACL), or kept as indexed."""
    if acl is None:
        return PendingDocument(entry.doc_id, change, ScannedDocument(entry.doc_id, entry.path))
    document = ScannedDocument(entry.doc_id, entry.path, acl=acl, version=entry.version)
    return PendingDocument(entry.doc_id, change, document)


def classify(doc_version: str, acl_fp: str, entry: ManifestEntry | None) -> ChangeClass:
    if entry is None:
        return ADDED
    if entry.version == doc_version:
        return UNCHANGED if entry.acl_fingerprint == acl_fp else ACL_ONLY
    if entry.state == "failed" and entry.failed_version == doc_version:
        return FAILED_BEFORE
    return ADDED if entry.version is None else CHANGED


def blob_dir(store: StagingStore) -> Path:
    return Path(store.path).parent / "blobs"


def stage_bytes(folder: Path, doc: SourceDocument) -> SourceDocument:
    """Write inline content to a file the parser can read; local documents pass through."""
    if doc.local_path is not None or doc.content is None:
        return doc
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(doc.doc_id.encode()).hexdigest()[:32]
    suffix = f".{doc.doc_type}" if doc.doc_type and doc.doc_type.isalnum() else ""
    path = folder / f"{name}{suffix}"
    path.write_bytes(doc.content)
    return dataclasses.replace(
        doc,
        local_path=path,
        content=None,
        size=len(doc.content),
        identity=FileIdentity.of(path.stat()),
    )


def permission_sync_due(config: SourceConfig, store: StagingStore, now: datetime) -> bool:
    if config.permission_sync_interval is None:
        return True
    last = store.counter(PERMISSION_SYNCED_AT)
    if not last:
        return True
    return now - datetime.fromisoformat(last) >= config.permission_sync_interval


@dataclass
class _Listing:
    documents: dict[str, SourceDocument] = field(default_factory=dict)
    failures: dict[str, DocumentFailure] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    cursor: str | None = None
    complete: bool = False
    error: str | None = None

    def add(self, batch: ChangeBatch) -> None:
        for doc in batch.documents:
            self.documents[doc.doc_id] = doc  # a later batch wins
            self.deleted.discard(doc.doc_id)
            self.failures.pop(doc.doc_id, None)
        for failure in batch.failures:
            self.failures[failure.doc_id] = failure
        for doc_id in batch.deleted:
            self.deleted.add(doc_id)
            self.documents.pop(doc_id, None)
        if batch.cursor is not None:
            self.cursor = batch.cursor
        self.complete = self.complete or batch.complete


def _list_changes(connector: Connector, cursor: str | None) -> _Listing:
    listing = _Listing(cursor=cursor)
    try:
        for batch in connector.changes(cursor):
            listing.add(batch)
    except ConnectorError as exc:
        if not (listing.documents or listing.deleted or listing.failures):
            raise  # nothing usable: the run fails with the reason
        listing.error = str(exc)
        listing.complete = False  # a partial listing must never delete what it missed
        log.warning("listing stopped early, processing what was gathered: %s", exc)
    return listing


def compute_change_set(
    config: SourceConfig,
    store: StagingStore,
    policy: AclPolicy,
    connector: Connector,
    *,
    fetch: bool = True,
    permission_sync: bool = True,
    now: datetime | None = None,
    index_check: IndexCheck | None = None,
) -> ChangeScan:
    """Classify what changed since the committed cursor (see the module doc).

    With ``fetch=False`` (a dry run, ``trove status``) no bytes are downloaded
    and nothing is written; ``permission_sync=False`` skips the id-only listing.
    ``index_check`` names the documents the index lacks (see the module doc, 5).
    """
    now = now or datetime.now(UTC)
    manifest = store.manifest()
    repair = _Repair.plan(store, manifest, index_check)
    listing = _list_changes(connector, store.counter(CURSOR))
    blobs = blob_dir(store)
    if fetch:
        shutil.rmtree(blobs, ignore_errors=True)  # the previous run's bytes are consumed

    retry_ids: list[str] = []
    failures = dict(listing.failures)

    def fetched(doc: SourceDocument) -> SourceDocument | None:
        if not fetch or doc.local_path is not None or doc.content is not None:
            return stage_bytes(blobs, doc) if fetch else doc
        try:
            return stage_bytes(blobs, connector.fetch(doc.doc_id))
        except DocumentGone:
            listing.deleted.add(doc.doc_id)
        except ConnectorError as exc:
            failures[doc.doc_id] = DocumentFailure(doc.doc_id, doc.path, f"fetch failed: {exc}")
            retry_ids.append(doc.doc_id)
        return None

    # Documents whose fetch failed last run: the cursor moved past them.
    for doc_id in store.counter(RETRY_IDS) or []:
        if doc_id in listing.documents or doc_id in listing.deleted or not fetch:
            continue
        try:
            listing.documents[doc_id] = connector.fetch(doc_id)
        except DocumentGone:
            listing.deleted.add(doc_id)
        except ConnectorError as exc:
            entry = manifest.get(doc_id)
            path = entry.path if entry else doc_id
            failures[doc_id] = DocumentFailure(doc_id, path, f"fetch failed: {exc}")
            retry_ids.append(doc_id)

    rows: list[PendingDocument] = []
    for doc in listing.documents.values():
        acl = policy.acl_for(doc)
        change = classify(doc.version, acl.fingerprint(), manifest.get(doc.doc_id))
        change = repair.change(doc.doc_id, change)
        if change in CONTENT_CHANGES:
            staged = fetched(doc)
            if staged is None:
                continue
            doc = staged
        rows.append(listed_row(doc, acl, change))

    seen = set(listing.documents) | set(failures)
    if listing.complete:
        listing.deleted |= set(manifest) - seen

    permission_synced = False
    due = permission_sync and permission_sync_due(config, store, now)
    if not listing.complete and listing.error is None and due:
        stamps = {s.doc_id: s for s in connector.list_ids()}
        permission_synced = True
        listing.deleted |= set(manifest) - set(stamps) - seen
        for stamp in stamps.values():
            if stamp.doc_id in seen:
                continue
            row = _resync(stamp, manifest.get(stamp.doc_id), policy, connector, fetched, repair)
            if row is not None:
                rows.append(row)

    if repair.documents and not listing.complete:
        # An incremental listing names only what changed since the cursor: the
        # documents the index lost that it did not name are restored by id.
        named = {r.doc_id for r in rows} | listing.deleted | set(failures)
        for doc_id in sorted(repair.documents - named):
            row = _restore_unlisted(manifest[doc_id], policy, connector, fetched, repair, fetch)
            if row is not None:
                rows.append(row)

    for doc_id in sorted(listing.deleted & set(manifest)):
        rows.append(manifest_row(manifest[doc_id], DELETED))

    return ChangeScan(
        rows=rows,
        failures=list(failures.values()),
        documents_seen=len(listing.documents) + len(listing.failures),
        cursor=listing.cursor,
        retry_ids=sorted(set(retry_ids)),
        permission_synced=permission_synced,
        error=listing.error,
        refetched=sorted(
            r.doc_id for r in rows if r.change in CONTENT_CHANGES and r.doc_id in repair.forced
        ),
    )


@dataclass
class _Repair:
    """The documents an index check found missing or stale, and how each is restored."""

    documents: frozenset[str] = frozenset()
    restorable: frozenset[str] = frozenset()  # the state folder holds a whole copy
    forced: set[str] = field(default_factory=set)  # made `changed` to be parsed again

    @classmethod
    def plan(
        cls, store: StagingStore, manifest: dict[str, ManifestEntry], check: IndexCheck | None
    ) -> _Repair:
        if check is None or not check.to_rewrite:
            return cls()
        documents = frozenset(d for d in check.to_rewrite if d in manifest)
        kept = store.indexed_chunk_ids()
        restorable = frozenset(
            d for d in documents if manifest[d].chunk_ids and kept.get(d) == manifest[d].chunk_ids
        )
        return cls(documents, restorable)

    def change(self, doc_id: str, change: ChangeClass) -> ChangeClass:
        """The change class of ``doc_id`` once the index's losses are taken into account."""
        if doc_id not in self.documents or change not in _REPAIRABLE:
            return change
        if doc_id in self.restorable:
            return REWRITE
        if change == FAILED_BEFORE:
            # Its served version cannot be parsed again from the source, which now holds
            # a version that fails: it stays out of the index until that is fixed.
            return change
        self.forced.add(doc_id)
        return CHANGED


def _restore_unlisted(
    entry: ManifestEntry,
    policy: AclPolicy,
    connector: Connector,
    fetched: Fetch,
    repair: _Repair,
    fetch: bool,
) -> PendingDocument | None:
    """A document the index lost and the incremental listing did not name."""
    if entry.doc_id in repair.restorable and entry.acl is not None:
        # Unchanged since the cursor: the ACL it was last committed with is still in force.
        return manifest_row(entry, REWRITE, entry.acl)
    if not fetch:
        return None
    try:
        doc = connector.fetch(entry.doc_id)
    except DocumentGone:
        return manifest_row(entry, DELETED)
    except ConnectorError as exc:
        log.warning("%s is missing from the index and could not be fetched: %s", entry.path, exc)
        return None
    staged = fetched(doc)
    if staged is None:
        return None
    acl = policy.acl_for(staged)
    change = repair.change(staged.doc_id, classify(staged.version, acl.fingerprint(), entry))
    return listed_row(staged, acl, change)


def _resync(
    stamp: DocumentStamp,
    entry: ManifestEntry | None,
    policy: AclPolicy,
    connector: Connector,
    fetched: Fetch,
    repair: _Repair,
) -> PendingDocument | None:
    """A slim-listed document the change feed did not report: ACL drift or a missed version."""
    acl = policy.acl_for_path(stamp.path, stamp.acl)
    moved = bool(stamp.path) and entry is not None and stamp.path != entry.path
    if entry is not None and entry.version == stamp.version and not moved:
        same_acl = entry.acl_fingerprint == acl.fingerprint()
        change = repair.change(stamp.doc_id, UNCHANGED if same_acl else ACL_ONLY)
        if change == UNCHANGED:
            return None
        if change in (ACL_ONLY, REWRITE):
            return manifest_row(entry, change, acl)
        # Lost by the index with no copy to restore it from: fetched and parsed again.
    if entry is not None and entry.state == "failed" and entry.failed_version == stamp.version:
        return None  # failed at this version already; retried when it changes
    try:
        doc = connector.fetch(stamp.doc_id)
    except ConnectorError as exc:
        log.warning("re-sync of %s skipped: %s", stamp.doc_id, exc)
        return None
    staged = fetched(doc)
    if staged is None:
        return None
    acl = policy.acl_for(staged)
    change = classify(staged.version, acl.fingerprint(), entry)
    if moved and change in (UNCHANGED, ACL_ONLY):
        # An ancestor was renamed or moved: same content, new path in every citation.
        # Re-chunked from the fetched bytes; the vectors come from the cache.
        change = CHANGED
    change = repair.change(staged.doc_id, change)
    return listed_row(staged, acl, change)
