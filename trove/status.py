"""`trove status`: freshness and health per source, and the index's size.

Each source's manifest is also compared with the index, document by document
(:func:`pipelines.index_check.check_index`): when they disagree (the index was
deleted, replaced or restored from an older copy) the source's ``index`` entry
says how, and the report's ``problems`` list it as an error with the command
that fixes it; ``ok`` is false and the CLI exits 1.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.errors import ConnectorError
from connectors.registry import open_connector
from pipelines.config import SourceConfig
from pipelines.index_check import CORRUPT_INDEX_FIX, check_index
from pipelines.secure import AclPolicy
from pipelines.stages import count_changes
from pipelines.store import StagingStore, StateUnreadableError
from pipelines.sync import ACL_ONLY, ADDED, CHANGED, DELETED, compute_change_set
from retrieval.directory import GroupDirectory
from trove.config import Settings

STATE_FIX = "move the source's staging store aside, then trove ingest (it indexes the source again)"


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
            "ocr": ocr_status(source),
        }
    finally:
        store.close()


def ocr_status(source: SourceConfig) -> dict[str, Any]:
    """The source's OCR mode, and whether this machine can run it (``missing``: why not)."""
    from pipelines.ocr import INSTALL_HINT, ocr_tools

    missing = ocr_tools().missing(source.ocr_languages, pdf=True)
    return {
        "mode": source.ocr,
        "languages": list(source.ocr_languages),
        "available": missing is None,
        "missing": missing,
        "how_to_enable": INSTALL_HINT if missing else None,
    }


def hints_of(report: dict[str, Any]) -> list[dict[str, str]]:
    """Advice that is not an error: documents waiting for OCR on a machine without it."""
    hints = []
    for name, s in report["sources"].items():
        waiting = [f for f in s.get("failures", ()) if f["reason_class"] == "needs_ocr"]
        ocr = s.get("ocr") or {}
        if waiting and ocr.get("mode") == "off":
            hint = "set `ocr: auto` on the source, then trove ingest"
        elif waiting and not ocr.get("available", True):
            hint = f"{ocr['missing']}: {ocr['how_to_enable']}, then trove ingest"
        else:
            continue
        hints.append(
            {"source": name, "hint": f"{len(waiting)} document(s) need OCR to be read: {hint}"}
        )
    return hints


def index_status(settings: Settings) -> dict[str, Any]:
    """Size and health of the configured index (``ready`` false with an ``error`` if absent)."""
    from trove.commands.index import status_of

    return status_of(settings)


def index_agreement(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per source: the index compared with its manifest (see the module doc).

    An index that is not there counts as empty (a manifest listing chunks then
    disagrees with it); one that cannot be reached or read is reported as not
    checked, with the reason: `trove status` shows the index's error beside it.
    """
    from retrieval.index.base import IndexCorruptError, IndexError_, IndexNotFoundError
    from retrieval.index.factory import open_index

    index = None
    try:
        index = open_index(settings.index)
    except IndexNotFoundError:
        pass
    except IndexCorruptError as exc:
        error = f"the index is unreadable: {exc}"
        return {
            s.name: {"ok": False, "error": error, "fix": CORRUPT_INDEX_FIX}
            for s in settings.sources
        }
    except (IndexError_, ValueError, OSError) as exc:
        return {s.name: {"ok": None, "error": f"not checked: {exc}"} for s in settings.sources}
    try:
        out: dict[str, dict[str, Any]] = {}
        for source in settings.sources:
            try:
                store = StagingStore.for_source(settings.state.path, source.name)
            except StateUnreadableError as exc:
                out[source.name] = {"ok": False, "error": str(exc), "fix": STATE_FIX}
                continue
            try:
                out[source.name] = check_index(store, index, source.name, thorough=True).to_dict()
            finally:
                store.close()
        return out
    finally:
        if index is not None:
            index.close()


def problems_of(report: dict[str, Any]) -> list[dict[str, str]]:
    """The report's errors, each with the command that fixes it."""
    return [
        {"source": name, "error": s["index"]["error"], "fix": s["index"]["fix"]}
        for name, s in report["sources"].items()
        if s.get("index", {}).get("ok") is False
    ]


def _source_report(
    settings: Settings, source: SourceConfig, now: datetime, agreement: dict[str, Any]
) -> dict[str, Any]:
    try:
        return {**source_status(settings, source, now), "index": agreement}
    except StateUnreadableError as exc:
        return {"index": {"ok": False, "error": str(exc), "fix": STATE_FIX}}


def status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    agreement = index_agreement(settings)
    report: dict[str, Any] = {
        "sources": {
            s.name: _source_report(settings, s, now, agreement[s.name]) for s in settings.sources
        },
        "index": index_status(settings),
    }
    report["problems"] = problems_of(report)
    report["hints"] = hints_of(report)
    report["ok"] = not report["problems"]
    return report
