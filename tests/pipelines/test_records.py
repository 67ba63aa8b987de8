"""The typed records between stages read what earlier versions persisted, and write it back alike.

The fixture is a staging store as the first versions wrote it: their schema (no
``reason_class``, ``annotations`` or manifest ``acl`` column), their JSON in the
``pending``, ``counters`` and ``runs`` tables, written here with plain SQL.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.models import FileIdentity, SourceDocument
from core.acl import Acl
from pipelines.errors import ParseError
from pipelines.records import (
    ChangeClass,
    FailedDocument,
    FailureReason,
    PendingDocument,
    ScannedDocument,
    count_changes,
)
from pipelines.run_records import (
    ParseCounts,
    PendingCommit,
    RunCounters,
    RunSummary,
    ScanCounts,
    ScreenCounts,
    WriteCounts,
)
from pipelines.stages import source_document_of
from pipelines.store import StagingStore
from retrieval.index.base import IndexGeneration

STAFF_ACL = {
    "allow_users": [],
    "allow_groups": ["staff"],
    "deny_users": [],
    "deny_groups": [],
    "tenant": None,
    "public": False,
}
LISTED = {
    "doc_id": "docs:guide.md",
    "source": "docs",
    "path": "guide.md",
    "uri": "file:///srv/docs/guide.md",
    "title": "Guide",
    "version": "sha256:abc",
    "size": 42,
    "modified_at": "2026-01-02T03:04:05+00:00",
    "doc_type": "md",
    "acl": STAFF_ACL,
    "local_path": "/srv/docs/guide.md",
    "author": "ann",
    "identity": {"dev": 1, "ino": 2, "size": 42, "mtime_ns": 3},
}
KEPT = {"doc_id": "docs:kept.md", "path": "kept.md", "version": "sha256:k", "acl": STAFF_ACL}
GONE = {"doc_id": "docs:old.md", "path": "old.md"}
REPAIR = {
    "reason": "the index is missing",
    "to_rewrite": ["docs:kept.md"],
    "orphans": ["docs:stray.md"],
    "refetched": [],
}
COMMIT = {
    "cursor": '{"seq": 4}',
    "retry_ids": ["docs:flaky.md"],
    "permission_synced_at": "2026-01-02T03:00:00+00:00",
    "index_checked": True,
    "index_generation": {"index_id": "ix-1", "sequence": 7, "commit": "c7"},
    "repair": REPAIR,
}
COUNTERS = {
    "run.scan": {"added": 1, "changed": 2, "unchanged": 3, "deleted": 1, "documents_seen": 7},
    "run.parse": {
        "documents_parsed": 2,
        "documents_failed": 1,
        "failures": [{"path": "bad.pdf", "reason": "it is encrypted", "reason_class": "encrypted"}],
    },
    "run.embed": {"chunks_embedded": 5, "chunks_reused": 9},
    "run.screen": {
        "pii_email": 2,
        "chunks_screened": 14,
        "injection_flagged": 1,
        "injection_dropped": 1,
        "pii_chunks_dropped": 2,
    },
    "run.scan_error": "page 3 of the listing failed",
    "run.repair": REPAIR,
    "sync.pending_commit": COMMIT,
}
# A run summary as the first version wrote it: fewer keys, failures without a reason class.
FIRST_SUMMARY = {
    "documents_seen": 3,
    "documents_parsed": 2,
    "documents_failed": [{"path": "bad.pdf", "reason": "not a PDF"}],
    "chunks_written": 4,
    "chunks_embedded": 4,
    "chunks_reused": 0,
    "unchanged": 0,
    "changed": 0,
    "added": 3,
    "deleted": 0,
    "acl_only": 0,
}
OLD_SCHEMA = """
CREATE TABLE manifest (doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, version TEXT,
    acl_fingerprint TEXT, chunk_ids TEXT NOT NULL DEFAULT '[]', state TEXT NOT NULL,
    failed_version TEXT, error TEXT, last_seen TEXT, indexed_at TEXT);
CREATE TABLE pending (doc_id TEXT PRIMARY KEY, change TEXT NOT NULL, document TEXT NOT NULL);
CREATE TABLE failures (doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, version TEXT,
    stage TEXT NOT NULL, reason TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, finished_at TEXT NOT NULL,
    summary TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "staging.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.executemany(
        "INSERT INTO pending VALUES (?, ?, ?)",
        [
            ("docs:guide.md", "changed", json.dumps(LISTED)),
            ("docs:kept.md", "rewrite", json.dumps(KEPT)),
            ("docs:old.md", "deleted", json.dumps(GONE)),
        ],
    )
    db.execute(
        "INSERT INTO failures VALUES ('docs:bad.pdf', 'bad.pdf', 'v1', 'parse', 'not a PDF',"
        " '2026-01-01T08:00:00+00:00', '2026-01-02T08:00:00+00:00')"
    )
    db.executemany(
        "INSERT INTO counters VALUES (?, ?)", [(k, json.dumps(v)) for k, v in COUNTERS.items()]
    )
    db.execute(
        "INSERT INTO runs (finished_at, summary) VALUES (?, ?)",
        ("2026-01-02T09:10:11+00:00", json.dumps(FIRST_SUMMARY)),
    )
    db.commit()
    db.close()
    return path


def test_pending_rows_in_the_old_format_load_and_write_back_unchanged(old_store):
    store = StagingStore(old_store)
    try:
        rows = {row.doc_id: row for row in store.pending()}
        assert {d: r.change for d, r in rows.items()} == {
            "docs:guide.md": ChangeClass.CHANGED,
            "docs:kept.md": ChangeClass.REWRITE,
            "docs:old.md": ChangeClass.DELETED,
        }
        assert [r.doc_id for r in store.pending(ChangeClass.REWRITE)] == ["docs:kept.md"]
        assert [r.doc_id for r in store.pending("deleted")] == ["docs:old.md"]
        guide = source_document_of(rows["docs:guide.md"])
        assert (guide.source, guide.uri, guide.version, guide.size) == (
            "docs",
            LISTED["uri"],
            LISTED["version"],
            42,
        )
        assert guide.modified_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert guide.acl == Acl.from_dict(STAFF_ACL) and guide.acl.allow_groups == {"staff"}
        assert guide.local_path == Path("/srv/docs/guide.md") and guide.identity.ino == 2
        assert rows["docs:kept.md"].acl.fingerprint() == Acl.from_dict(STAFF_ACL).fingerprint()
        assert rows["docs:old.md"].acl == Acl.empty()  # fail closed, never public
        with pytest.raises(ValueError, match="not listed"):
            source_document_of(rows["docs:kept.md"])

        store.replace_pending(rows.values())
        raw = {
            doc_id: json.loads(document)
            for doc_id, document in store._conn.execute("SELECT doc_id, document FROM pending")
        }
    finally:
        store.close()
    assert raw == {"docs:guide.md": LISTED, "docs:kept.md": KEPT, "docs:old.md": GONE}


def test_counters_and_runs_in_the_old_format_load(old_store):
    store = StagingStore(old_store)
    try:
        counters = store.run_counters()
        commit = store.pending_commit()
        [quarantined] = store.failures()
        last = store.last_run()
    finally:
        store.close()
    assert counters.scan.of(ChangeClass.CHANGED) == 2 and counters.scan.documents_seen == 7
    assert counters.scan.of(ChangeClass.REWRITE) == 0  # a class the old scan did not count
    assert counters.parse.failures == (
        FailedDocument("bad.pdf", "it is encrypted", FailureReason.ENCRYPTED),
    )
    assert counters.screen.pii_found == {"email": 2}
    assert counters.tag.chunks_tagged == 0  # never recorded: zero
    assert counters.scan_error == "page 3 of the listing failed"
    assert counters.repair is not None and counters.repair.orphans == ("docs:stray.md",)
    assert commit is not None and commit.to_dict() == COMMIT
    assert commit.index_generation == IndexGeneration("ix-1", 7, "c7")
    # A failures table from before reason classes: the migration's default.
    assert quarantined.reason_class == FailureReason.MALFORMED
    assert quarantined.first_seen == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert last is not None and last.finished_at == datetime(2026, 1, 2, 9, 10, 11, tzinfo=UTC)
    assert last.summary.added == 3 and last.summary.rebuilt == 0
    assert last.summary.documents_failed == (FailedDocument("bad.pdf", "not a PDF"),)
    assert last.summary.index_repair is None and last.summary.sync_error is None
    rendered = last.to_dict()
    assert rendered["finished_at"] == "2026-01-02T09:10:11+00:00"
    assert {k: rendered[k] for k in FIRST_SUMMARY if k != "documents_failed"} == {
        k: v for k, v in FIRST_SUMMARY.items() if k != "documents_failed"
    }


def test_the_summary_of_old_counters_is_what_the_old_summary_gave(old_store):
    store = StagingStore(old_store)
    try:
        write = WriteCounts(chunks_written=6, documents_rewritten=1, orphans_removed=1)
        summary = RunSummary.of(store.run_counters(), write, store.failures())
    finally:
        store.close()
    scan, screen = COUNTERS["run.scan"], COUNTERS["run.screen"]
    assert summary.to_dict() == {
        "documents_seen": scan["documents_seen"],
        "documents_parsed": COUNTERS["run.parse"]["documents_parsed"],
        "documents_failed": [
            {"path": "bad.pdf", "reason": "not a PDF", "reason_class": "malformed"}
        ],
        "chunks_written": 6,
        "chunks_embedded": COUNTERS["run.embed"]["chunks_embedded"],
        "chunks_reused": COUNTERS["run.embed"]["chunks_reused"],
        "unchanged": scan["unchanged"],
        "changed": scan["changed"],
        "added": scan["added"],
        "deleted": scan["deleted"],
        "acl_only": 0,
        "quarantined": 1,
        "pii_found": {"email": screen["pii_email"]},
        "injection_flagged": screen["injection_flagged"],
        "chunks_dropped": screen["injection_dropped"] + screen["pii_chunks_dropped"],
        "sync_error": COUNTERS["run.scan_error"],
        "rebuilt": 1,
        "index_repair": {
            "reason": REPAIR["reason"],
            "rewritten_from_state": 1,
            "refetched": 0,
            "orphans_removed": 1,
            "not_repaired": 0,
        },
    }
    # What the store keeps is what it reads back.
    assert RunSummary.from_dict(summary.to_dict()) == summary


def test_stage_counts_persist_as_before(tmp_path):
    store = StagingStore(tmp_path / "staging.sqlite")
    try:
        scan = ScanCounts(
            changes={ChangeClass.ADDED: 2, ChangeClass.UNCHANGED: 5},
            documents_seen=7,
            index_missing_documents=1,
            index_stale_documents=0,
            index_orphaned_documents=0,
            refetched=0,
        )
        screen = ScreenCounts({"email": 3, "iban": 1}, chunks_screened=9, pii_chunks_dropped=1)
        parse = ParseCounts(1, (FailedDocument("x.pdf", "bad", FailureReason.TIMEOUT),))
        commit = PendingCommit(cursor="c", retry_ids=("a",), repair=None)
        store.record_scan(scan, commit, error=None)
        store.record_stage(screen)
        store.record_stage(parse)
        assert store.counter("run.scan") == {
            "added": 2,
            "changed": 0,
            "unchanged": 5,
            "deleted": 0,
            "acl_only": 0,
            "failed_before": 0,
            "rewrite": 0,
            "documents_seen": 7,
            "fetch_failures": 0,
            "permission_sync": 0,
            "index_missing_documents": 1,
            "index_stale_documents": 0,
            "index_orphaned_documents": 0,
            "refetched": 0,
        }
        assert store.counter("run.screen") == {
            "pii_email": 3,
            "pii_iban": 1,
            "chunks_screened": 9,
            "injection_flagged": 0,
            "injection_dropped": 0,
            "pii_chunks_dropped": 1,
        }
        assert store.counter("run.parse") == {
            "documents_parsed": 1,
            "documents_failed": 1,
            "failures": [{"path": "x.pdf", "reason": "bad", "reason_class": "timeout"}],
        }
        assert store.counter("run.repair") is None and store.scan_error() is None
        assert store.pending_commit() == commit
        counters = store.run_counters()
        assert (counters.scan, counters.screen, counters.parse) == (scan, screen, parse)
        assert counters == RunCounters(scan=scan, parse=parse, screen=screen)
    finally:
        store.close()


def test_a_scanned_document_keeps_what_the_listing_said(tmp_path):
    acl = Acl.from_dict(STAFF_ACL)
    doc = SourceDocument(
        doc_id="docs:a.md",
        source="docs",
        path="a.md",
        uri="file:///a.md",
        title="A",
        version="v2",
        size=3,
        modified_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=1),
        doc_type="md",
        acl=Acl.public_acl(),  # the source's own ACL: the policy's decision replaces it
        local_path=tmp_path / "a.md",
        content=None,
        author="ann",
        identity=FileIdentity(1, 2, 3, 4),
    )
    scanned = ScannedDocument.listed(doc, acl)
    assert ScannedDocument.from_json(json.loads(json.dumps(scanned.to_json()))) == scanned
    parsed_from = scanned.to_source_document()
    assert parsed_from.acl == acl and not parsed_from.acl.public
    assert (parsed_from.path, parsed_from.version, parsed_from.identity) == (
        "a.md",
        "v2",
        doc.identity,
    )


def _subclasses(cls: type[ParseError]) -> list[type[ParseError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_every_parse_errors_reason_class_is_a_failure_reason():
    classes = _subclasses(ParseError)
    assert len(classes) > 10
    for cls in classes:
        assert isinstance(cls.reason_class, FailureReason), cls
    given = ParseError("a.pdf has only scans", reason_class="needs_ocr")
    assert given.reason_class is FailureReason.NEEDS_OCR
    with pytest.raises(ValueError, match="unknown reason class 'scanned'"):
        ParseError("a.pdf", reason_class="scanned")


def test_count_changes_counts_every_class():
    rows = [
        PendingDocument(f"d{i}", change, ScannedDocument(f"d{i}", f"{i}.md"))
        for i, change in enumerate([ChangeClass.ADDED, ChangeClass.ADDED, ChangeClass.REWRITE])
    ]
    counts = count_changes(rows)
    assert set(counts) == set(ChangeClass)
    assert (
        counts[ChangeClass.ADDED],
        counts[ChangeClass.REWRITE],
        counts[ChangeClass.DELETED],
    ) == (
        2,
        1,
        0,
    )
