"""An ingest with nothing to do, found out and recorded without the asset graph.

A scheduled re-sync of an unchanged source is the most frequent thing Trove
does. Starting Dagster for it (its import, an ephemeral instance with its
SQLite schema, a run of seven steps) costs more than everything the run then
finds to do. :func:`idle_scan` runs the same decisions the ``source_documents``
asset makes — the lost-index check and the change set against the manifest —
as a dry run that fetches and writes nothing, and answers only when they leave
nothing to do; :func:`record_idle_run` then commits what the write stage would
have committed for that empty change set (the cursor, ``last_seen``, the run
record and the per-stage counters), so `trove status`, the freshness checks and
the next run see exactly what a Dagster run leaves behind.

Anything else — a document added, changed, deleted, ACL-only, to be retried or
unreadable; a listing cut short; a permission sync due; an index that is not at
the generation the manifest recorded (or missing, or unreadable); a ``redact``
PII policy (the redaction check re-reads the index every run, and a policy
change is no document change) — returns None and the caller runs the asset
graph, which scans again (see docs/freshness.md for that cost).

Only folder sources are checked: for a remote source the dry listing would page
through (or crawl) the remote system once more before the real run does.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.errors import ConnectorError
from connectors.registry import open_connector
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from pipelines.index_check import IndexCheck, check_index
from pipelines.records import ChangeClass, count_changes
from pipelines.run_records import RunCounters, RunSummary, ScanCounts, WriteCounts
from pipelines.store import CURSOR, RETRY_IDS, StagingStore
from pipelines.sync import ChangeScan, compute_change_set
from retrieval.index.base import IndexBackendError
from retrieval.index.config import IndexConfig
from retrieval.index.factory import open_index

IDLE_CHANGES = (ChangeClass.UNCHANGED, ChangeClass.FAILED_BEFORE)


@dataclass(frozen=True)
class IdleScan:
    """A dry scan that found nothing to do, and the index check it ran against."""

    scan: ChangeScan
    index_check: IndexCheck


def idle_scan(config: SourceConfig, store: StagingStore, index: IndexConfig) -> IdleScan | None:
    """The source's change set when it holds nothing to do; None when a run is needed."""
    if config.type != "filesystem" or config.pii.policy == "redact":
        return None
    if store.counter(RETRY_IDS):
        return None  # fetches that failed last run are retried by the real scan
    check = _index_check(store, index, config.name)
    if check is None or check.compared or not check.ok:
        return None  # not at the recorded generation: the real run compares and repairs
    connector = open_connector(config.scope(), config.connector_settings)
    try:
        scan = compute_change_set(
            config,
            store,
            AclPolicy.from_config(config.acl),
            connector,
            fetch=False,  # a dry run: nothing downloaded, staged or deleted
            index_check=check,
        )
    except ConnectorError:
        return None  # the real run reports it
    finally:
        connector.close()
    busy = (
        scan.failures
        or scan.error
        or scan.retry_ids
        or scan.permission_synced  # its time is committed by the write stage
        or any(row.change not in IDLE_CHANGES for row in scan.rows)
    )
    return None if busy else IdleScan(scan, check)


def _index_check(store: StagingStore, config: IndexConfig, source: str) -> IndexCheck | None:
    try:
        index = open_index(config)
    except IndexBackendError:
        return None  # missing or unreadable: the asset graph says which and what to do
    try:
        return check_index(store, index, source)
    finally:
        index.close()


def idle_stage_counters(scan: ChangeScan) -> RunCounters:
    """The counters each stage of the asset graph records for an empty change set."""
    return RunCounters(
        scan=ScanCounts(changes=count_changes(scan.rows), documents_seen=scan.documents_seen)
    )


# An empty change set writes nothing: the index is not touched.
IDLE_WRITE_COUNTS = WriteCounts()


def record_idle_run(store: StagingStore, idle: IdleScan) -> RunSummary:
    """Commit the empty change set as the write stage would; returns the run summary.

    The index is not touched: it is at the generation the manifest recorded,
    which therefore stays recorded.
    """
    counters = idle_stage_counters(idle.scan)
    summary = RunSummary.of(counters, IDLE_WRITE_COUNTS, store.failures())
    with store.transaction() as conn:
        store.put_run_counters(conn, counters)
        store.record_seen(conn, [r.doc_id for r in idle.scan.rows])
        # A file touched without a content change moves the stat cursor only.
        store.put_counter(conn, CURSOR, idle.scan.cursor)
        store.put_counter(conn, RETRY_IDS, [])
        store.put_pending_commit(conn, None)
        store.clear_stage_data(conn)
        store.add_run(conn, summary)
    return summary
