"""`trove status`: freshness and health per source, and the index's size."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.errors import ConnectorError
from connectors.registry import open_connector
from pipelines.secure import AclPolicy
from pipelines.stages import count_changes
from pipelines.store import StagingStore
from pipelines.sync import ACL_ONLY, ADDED, CHANGED, DELETED, compute_change_set
from trove.config import Settings, SourceConfig
from trove.directory import GroupDirectory


def _freshness(source: SourceConfig, last_sync: str | None, now: datetime) -> dict[str, Any]:
    age = (now - datetime.fromisoformat(last_sync)).total_seconds() if last_sync else None
    sla = source.freshness_sla.total_seconds() if source.freshness_sla else None
    if sla is None:
        state = "no_sla"
    elif age is None:
        state = "never_synced"
    else:
        state = "stale" if age > sla else "fresh"
    return {"sla_seconds": sla, "age_seconds": age, "state": state}


def _pending(source: SourceConfig, store: StagingStore) -> dict[str, Any]:
    """What the next sync would do: a dry run for folders (nothing fetched or written).

    Remote sources are not listed here: a dry run would crawl or page through
    the remote system, which is not what a status call should cost.
    """
    if source.type != "filesystem":
        return {"not_computed": "remote source: `trove ingest` syncs it"}
    connector = open_connector(source)
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
        return {"error": str(exc)}
    finally:
        connector.close()
    counts = count_changes(scan.rows)
    return {k: counts[k] for k in (ADDED, CHANGED, DELETED, ACL_ONLY)}


def source_status(settings: Settings, source: SourceConfig, now: datetime) -> dict[str, Any]:
    store = StagingStore.for_source(settings.state.path, source.name)
    try:
        manifest = store.manifest()
        last = store.last_run()
        pending = _pending(source, store)
        last_sync = last["finished_at"] if last else None
        return {
            "last_sync": last_sync,
            "documents": sum(1 for e in manifest.values() if e.state == "indexed"),
            "chunks": sum(len(e.chunk_ids) for e in manifest.values()),
            "pending": pending,
            "failures": [
                {
                    "path": f["path"],
                    "reason": f["reason"],
                    "reason_class": f["reason_class"],
                    "version": f["version"],
                    "first_seen": f["first_seen"],
                    "last_seen": f["last_seen"],
                }
                for f in store.failures()
            ],
            "freshness": _freshness(source, last_sync, now),
            "schedule": source.schedule,
            "type": source.type,
            "groups": GroupDirectory.in_state_dir(settings.state.path).status().get(source.name)
            if source.has_groups
            else None,
            "last_sync_error": (last or {}).get("sync_error"),
        }
    finally:
        store.close()


def index_status(settings: Settings) -> dict[str, Any]:
    """Size and health of the configured index (``ready`` false with an ``error`` if absent)."""
    from trove.commands.index import status_of

    return status_of(settings)


def status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        "sources": {s.name: source_status(settings, s, now) for s in settings.sources},
        "index": index_status(settings),
    }
