"""Durable staging storage between ingestion stages, and the per-source manifest.

Stages hand large data to each other through this store (SQLite, one file per
source), never through pickled Dagster outputs. Tables:

* ``manifest`` — what the index holds per document: version stamp, ACL
  (and its fingerprint), chunk ids, state, last seen. Updated only *after* the
  index committed, so a crash between the two makes the next run redo
  (idempotently) rather than forget work.
* ``indexed_chunks`` — a copy of every chunk as the index was last given it
  (text, citation metadata, annotations, embedding context; no vector, no ACL),
  committed with the manifest: a lost or replaced index is rewritten from it
  and the embedding cache, without the source, the parser or the model.
* ``counters`` — named JSON values: the source's sync state committed with the
  index (cursor, documents to retry, the index generation the manifest was last
  committed against: :meth:`StagingStore.index_generation`), and what the
  stages of the run in progress record for later ones, typed by
  :mod:`pipelines.run_records` (stage counts, the listing's error, the scan's
  :class:`~pipelines.run_records.PendingCommit`).
* ``pending`` — the change set of the run in progress: one
  :class:`~pipelines.records.PendingDocument` per document seen or deleted.
* ``parsed`` / ``chunks`` — stage outputs for the pending documents.
* ``failures`` — documents that could not be read or parsed, with the reason.
* ``runs`` — one summary row per completed sync.

The embedding cache lives apart (:class:`EmbeddingCache`), shared by sources,
keyed by model and the hash of the exact text embedded.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.acl import Acl
from core.errors import TroveError
from pipelines.models import Chunk, ParsedDocument, ParsedElement
from pipelines.records import (
    ChangeClass,
    FailureReason,
    FailureStage,
    PendingDocument,
    QuarantinedDocument,
    ScannedDocument,
)
from pipelines.run_records import (
    ChunkCounts,
    EmbedCounts,
    ParseCounts,
    PendingCommit,
    RecordedRun,
    RepairPlan,
    RunCounters,
    RunSummary,
    ScanCounts,
    ScreenCounts,
    StageCounts,
    TagCounts,
)
from retrieval.index.base import ChunkRecord, IndexGeneration

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (
    doc_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    version TEXT,                 -- indexed version (NULL if never indexed)
    acl_fingerprint TEXT,
    chunk_ids TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,          -- indexed | failed
    failed_version TEXT,          -- version that failed to parse (not retried until it changes)
    error TEXT,
    last_seen TEXT,
    indexed_at TEXT,
    acl TEXT                      -- JSON: the ACL in force when last committed
);
CREATE TABLE IF NOT EXISTS pending (
    doc_id TEXT PRIMARY KEY,
    -- added | changed | unchanged | deleted | acl_only | failed_before
    change TEXT NOT NULL,
    document TEXT NOT NULL        -- JSON: the scanned document (path, version, acl, metadata)
);
CREATE TABLE IF NOT EXISTS parsed (
    doc_id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    elements TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    body TEXT NOT NULL,           -- JSON of the Chunk
    acl TEXT,                     -- JSON ACL once tagged
    annotations TEXT              -- JSON: risk flags, PII counts (never values)
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ord);
CREATE TABLE IF NOT EXISTS failures (
    doc_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    version TEXT,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    reason_class TEXT NOT NULL DEFAULT 'malformed',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    finished_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS indexed_chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    record TEXT NOT NULL          -- JSON: the chunk as written (no vector or ACL), its context
);
CREATE INDEX IF NOT EXISTS indexed_chunks_by_doc ON indexed_chunks(doc_id, ord);
"""

# Counter names. The source's sync state, committed with the index:
INDEX_GENERATION = "index.generation"  # the generation the manifest was committed against
CURSOR = "sync.cursor"
RETRY_IDS = "sync.retry_ids"  # documents whose fetch failed, retried by id
PERMISSION_SYNCED_AT = "sync.permission_synced_at"
# What the run in progress recorded (pipelines.run_records), read by later stages:
PENDING_COMMIT = "sync.pending_commit"  # what the write stage commits for this run
SCAN_ERROR = "run.scan_error"
REPAIR = "run.repair"


def stage_counter(stage: str) -> str:
    """The counter a stage's counts are kept under (``run.scan``, ``run.parse``, ...)."""
    return f"run.{stage}"


class StateUnreadableError(TroveError, RuntimeError):
    """A source's staging store cannot be read (a corrupted or foreign file)."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@dataclass(frozen=True)
class ManifestEntry:
    doc_id: str
    path: str
    version: str | None
    acl_fingerprint: str | None
    chunk_ids: tuple[str, ...]
    state: str
    failed_version: str | None
    error: str | None
    last_seen: str | None
    indexed_at: str | None
    # The ACL in force when last committed; None in a store written before it was kept.
    acl: Acl | None = None

    @property
    def expected_in_index(self) -> bool:
        """Whether the index should hold chunks of this document (a failed new version
        keeps the previously indexed one serving)."""
        return self.version is not None and bool(self.chunk_ids)


def chunk_to_json(chunk: Chunk) -> str:
    return json.dumps(
        {
            "chunk_id": chunk.chunk_id,
            "doc_id": chunk.doc_id,
            "ord": chunk.ord,
            "text": chunk.text,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
            "section": list(chunk.section),
            "pages": list(chunk.pages),
            "token_count": chunk.token_count,
            "context": chunk.context,
        }
    )


def indexed_record_to_json(record: ChunkRecord, context: str) -> str:
    """A chunk as written to the index, for :meth:`StagingStore.put_indexed_chunks`."""
    return json.dumps(
        {
            "chunk_id": record.chunk_id,
            "doc_id": record.doc_id,
            "source": record.source,
            "ord": record.ord,
            "text": record.text,
            "title": record.title,
            "uri": record.uri,
            "path": record.path,
            "section": list(record.section),
            "pages": list(record.pages),
            "char_start": record.char_start,
            "char_end": record.char_end,
            "doc_version": record.doc_version,
            "doc_type": record.doc_type,
            "modified_at": record.modified_at.isoformat() if record.modified_at else None,
            "metadata": dict(record.metadata),
            "context": context,
        }
    )


def indexed_record_from_json(blob: str) -> tuple[ChunkRecord, str]:
    """(record without vector, with the empty ACL; the chunk's embedding context)."""
    d = json.loads(blob)
    return ChunkRecord.from_fields(d, Acl.empty()), d["context"]


def chunk_from_json(blob: str) -> Chunk:
    d = json.loads(blob)
    return Chunk(
        chunk_id=d["chunk_id"],
        doc_id=d["doc_id"],
        ord=d["ord"],
        text=d["text"],
        char_start=d["char_start"],
        char_end=d["char_end"],
        section=tuple(d["section"]),
        pages=tuple(d["pages"]),
        token_count=d["token_count"],
        context=d["context"],
    )


class StagingStore:
    """The staging database of one source."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._conn = _connect(self.path)
            self._conn.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateUnreadableError(
                f"the staging store {self.path} is unreadable ({exc}); move it aside and run "
                "`trove ingest`: the source is listed and indexed again, and the index's "
                "other documents of it are removed"
            ) from exc

    def _migrate(self) -> None:
        """Add the columns later versions introduced to a staging store made earlier."""
        for table, column, ddl in (
            ("failures", "reason_class", "TEXT NOT NULL DEFAULT 'malformed'"),
            ("chunks", "annotations", "TEXT"),
            ("manifest", "acl", "TEXT"),
        ):
            columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")

    @classmethod
    def for_source(cls, state_dir: Path, source: str) -> StagingStore:
        return cls(Path(state_dir) / "sources" / source / "staging.sqlite")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    # -- manifest -----------------------------------------------------------------

    def manifest(self) -> dict[str, ManifestEntry]:
        rows = self._conn.execute(
            "SELECT doc_id, path, version, acl_fingerprint, chunk_ids, state, failed_version,"
            " error, last_seen, indexed_at, acl FROM manifest"
        ).fetchall()
        return {
            r[0]: ManifestEntry(
                doc_id=r[0],
                path=r[1],
                version=r[2],
                acl_fingerprint=r[3],
                chunk_ids=tuple(json.loads(r[4])),
                state=r[5],
                failed_version=r[6],
                error=r[7],
                last_seen=r[8],
                indexed_at=r[9],
                acl=Acl.from_dict(json.loads(r[10])) if r[10] else None,
            )
            for r in rows
        }

    def record_indexed(
        self,
        conn: sqlite3.Connection,
        doc_id: str,
        path: str,
        version: str,
        acl_fp: str,
        chunk_ids: Sequence[str],
        acl: Acl | None = None,
    ) -> None:
        now = utcnow()
        acl_json = json.dumps(acl.to_dict()) if acl is not None else None
        conn.execute(
            "INSERT INTO manifest (doc_id, path, version, acl_fingerprint, chunk_ids, state,"
            " failed_version, error, last_seen, indexed_at, acl)"
            " VALUES (?, ?, ?, ?, ?, 'indexed', NULL, NULL, ?, ?, ?)"
            " ON CONFLICT(doc_id) DO UPDATE SET path=excluded.path, version=excluded.version,"
            " acl_fingerprint=excluded.acl_fingerprint, chunk_ids=excluded.chunk_ids,"
            " state='indexed', failed_version=NULL, error=NULL, last_seen=excluded.last_seen,"
            " indexed_at=excluded.indexed_at, acl=excluded.acl",
            (doc_id, path, version, acl_fp, json.dumps(list(chunk_ids)), now, now, acl_json),
        )
        conn.execute("DELETE FROM failures WHERE doc_id = ?", (doc_id,))

    def record_acl(
        self, conn: sqlite3.Connection, doc_id: str, acl_fp: str, acl: Acl | None = None
    ) -> None:
        conn.execute(
            "UPDATE manifest SET acl_fingerprint = ?, acl = ?, last_seen = ? WHERE doc_id = ?",
            (acl_fp, json.dumps(acl.to_dict()) if acl is not None else None, utcnow(), doc_id),
        )

    def record_seen(self, conn: sqlite3.Connection, doc_ids: Iterable[str]) -> None:
        now = utcnow()
        conn.executemany(
            "UPDATE manifest SET last_seen = ? WHERE doc_id = ?", [(now, d) for d in doc_ids]
        )

    def record_deleted(self, conn: sqlite3.Connection, doc_id: str) -> None:
        conn.execute("DELETE FROM manifest WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM failures WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM indexed_chunks WHERE doc_id = ?", (doc_id,))

    # -- what the index was given --------------------------------------------------

    def put_indexed_chunks(
        self, conn: sqlite3.Connection, doc_id: str, records: Sequence[tuple[ChunkRecord, str]]
    ) -> None:
        """Replace the kept copy of ``doc_id``'s chunks: (record as written, embedding context)."""
        conn.execute("DELETE FROM indexed_chunks WHERE doc_id = ?", (doc_id,))
        conn.executemany(
            "INSERT OR REPLACE INTO indexed_chunks (chunk_id, doc_id, ord, record)"
            " VALUES (?, ?, ?, ?)",
            [
                (r.chunk_id, doc_id, r.ord, indexed_record_to_json(r, context))
                for r, context in records
            ],
        )

    def indexed_chunks(self, doc_id: str) -> list[tuple[ChunkRecord, str]]:
        """The kept copy of ``doc_id``'s chunks, in order: (record, embedding context)."""
        rows = self._conn.execute(
            "SELECT record FROM indexed_chunks WHERE doc_id = ? ORDER BY ord", (doc_id,)
        ).fetchall()
        return [indexed_record_from_json(r[0]) for r in rows]

    def indexed_chunk_ids(self) -> dict[str, tuple[str, ...]]:
        """doc_id -> the chunk ids of its kept copy, in order."""
        out: dict[str, list[str]] = {}
        for doc_id, chunk_id in self._conn.execute(
            "SELECT doc_id, chunk_id FROM indexed_chunks ORDER BY doc_id, ord"
        ):
            out.setdefault(doc_id, []).append(chunk_id)
        return {d: tuple(c) for d, c in out.items()}

    def index_generation(self) -> IndexGeneration | None:
        """The index generation the manifest was last committed against (None: unknown)."""
        return IndexGeneration.from_dict(self.counter(INDEX_GENERATION))

    def put_index_generation(
        self, conn: sqlite3.Connection, generation: IndexGeneration | None
    ) -> None:
        self.put_counter(conn, INDEX_GENERATION, generation.to_dict() if generation else None)

    def record_failure(
        self,
        doc_id: str,
        path: str,
        version: str | None,
        stage: FailureStage,
        reason: str,
        reason_class: FailureReason = FailureReason.MALFORMED,
    ) -> None:
        """Quarantine a document, with why; any previously indexed version keeps serving."""
        now = utcnow()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO failures (doc_id, path, version, stage, reason, reason_class,"
                " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(doc_id) DO UPDATE SET"
                " path=excluded.path, version=excluded.version, stage=excluded.stage,"
                " reason=excluded.reason, reason_class=excluded.reason_class,"
                " last_seen=excluded.last_seen",
                (doc_id, path, version, stage, reason, reason_class, now, now),
            )
            conn.execute(
                "INSERT INTO manifest (doc_id, path, version, chunk_ids, state, failed_version,"
                " error, last_seen) VALUES (?, ?, NULL, '[]', 'failed', ?, ?, ?)"
                " ON CONFLICT(doc_id) DO UPDATE SET state='failed',"
                " failed_version=excluded.failed_version, error=excluded.error,"
                " last_seen=excluded.last_seen",
                (doc_id, path, version, reason, now),
            )

    def failures(self) -> list[QuarantinedDocument]:
        """The quarantine: every document not indexed because it was refused or failed."""
        rows = self._conn.execute(
            "SELECT doc_id, path, version, stage, reason, reason_class, first_seen, last_seen"
            " FROM failures ORDER BY path"
        ).fetchall()
        return [
            QuarantinedDocument(
                doc_id=doc_id,
                path=path,
                version=version,
                stage=stage,
                reason=reason,
                reason_class=FailureReason(reason_class),
                first_seen=datetime.fromisoformat(first_seen),
                last_seen=datetime.fromisoformat(last_seen),
            )
            for doc_id, path, version, stage, reason, reason_class, first_seen, last_seen in rows
        ]

    def retry_failed(self) -> int:
        """Make quarantined documents eligible again on the next run (on request)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE manifest SET failed_version = NULL WHERE failed_version IS NOT NULL"
            )
            return cur.rowcount

    # -- pending change set ---------------------------------------------------------

    def replace_pending(self, rows: Iterable[PendingDocument]) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM pending")
            conn.executemany(
                "INSERT INTO pending (doc_id, change, document) VALUES (?, ?, ?)",
                [(r.doc_id, str(r.change), json.dumps(r.document.to_json())) for r in rows],
            )

    def pending(self, *changes: ChangeClass | str) -> list[PendingDocument]:
        """The run's change set (of the given change classes only, if any), by document id."""
        sql = "SELECT doc_id, change, document FROM pending"
        args: tuple[str, ...] = ()
        if changes:
            sql += f" WHERE change IN ({','.join('?' * len(changes))})"
            args = tuple(str(c) for c in changes)
        sql += " ORDER BY doc_id"
        return [
            PendingDocument(r[0], ChangeClass(r[1]), ScannedDocument.from_json(json.loads(r[2])))
            for r in self._conn.execute(sql, args).fetchall()
        ]

    def drop_pending(self, doc_ids: Iterable[str]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM pending WHERE doc_id = ?", [(d,) for d in doc_ids])

    def clear_stage_data(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM pending")
        conn.execute("DELETE FROM parsed")
        conn.execute("DELETE FROM chunks")

    # -- parsed documents -----------------------------------------------------------

    def put_parsed(self, doc: ParsedDocument) -> None:
        elements = [
            [e.category, e.char_start, e.char_end, e.page, e.heading_level] for e in doc.elements
        ]
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO parsed (doc_id, version, title, text, elements)"
                " VALUES (?, ?, ?, ?, ?)",
                (doc.doc_id, doc.version, doc.title, doc.text, json.dumps(elements)),
            )

    def get_parsed(self, doc_id: str) -> ParsedDocument | None:
        row = self._conn.execute(
            "SELECT version, title, text, elements FROM parsed WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        version, title, text, elements = row
        return ParsedDocument(
            doc_id=doc_id,
            version=version,
            title=title,
            text=text,
            elements=tuple(
                ParsedElement(cat, text[s:e], s, e, page, level)
                for cat, s, e, page, level in json.loads(elements)
            ),
        )

    def parsed_ids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT doc_id FROM parsed ORDER BY doc_id")]

    # -- chunks ---------------------------------------------------------------------

    def put_chunks(self, doc_id: str, chunks: Sequence[Chunk]) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            conn.executemany(
                "INSERT INTO chunks (chunk_id, doc_id, ord, body, acl) VALUES (?, ?, ?, ?, NULL)",
                [(c.chunk_id, doc_id, c.ord, chunk_to_json(c)) for c in chunks],
            )

    def set_chunk_acl(self, doc_id: str, acl: Acl) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE chunks SET acl = ? WHERE doc_id = ?", (json.dumps(acl.to_dict()), doc_id)
            )
            return cur.rowcount

    def chunks(self, doc_id: str | None = None) -> list[tuple[Chunk, Acl | None]]:
        sql = "SELECT body, acl FROM chunks"
        args: tuple[str, ...] = ()
        if doc_id is not None:
            sql += " WHERE doc_id = ?"
            args = (doc_id,)
        sql += " ORDER BY doc_id, ord"
        return [
            (chunk_from_json(body), Acl.from_dict(json.loads(acl)) if acl else None)
            for body, acl in self._conn.execute(sql, args).fetchall()
        ]

    def set_annotations(self, annotations: dict[str, dict[str, Any]]) -> None:
        """chunk_id -> annotations (risk flags, PII counts) for staged chunks."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE chunks SET annotations = ? WHERE chunk_id = ?",
                [(json.dumps(a), cid) for cid, a in annotations.items()],
            )

    def annotations(self, doc_id: str) -> dict[str, dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT chunk_id, annotations FROM chunks WHERE doc_id = ? AND annotations IS NOT NULL",
            (doc_id,),
        ).fetchall()
        return {cid: json.loads(a) for cid, a in rows}

    def chunk_doc_ids(self) -> list[str]:
        return [
            r[0] for r in self._conn.execute("SELECT DISTINCT doc_id FROM chunks ORDER BY doc_id")
        ]

    # -- runs and counters ----------------------------------------------------------

    def set_counter(self, name: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                (name, json.dumps(value)),
            )

    def put_counter(self, conn: sqlite3.Connection, name: str, value: Any) -> None:
        """Like :meth:`set_counter`, inside the caller's transaction."""
        conn.execute(
            "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, json.dumps(value))
        )

    def counter(self, name: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- what the run in progress recorded, for later stages ------------------------

    def record_stage(self, counts: StageCounts) -> None:
        """Keep a stage's counts for the run summary."""
        with self.transaction() as conn:
            self.put_stage_counts(conn, counts)

    def put_stage_counts(self, conn: sqlite3.Connection, counts: StageCounts) -> None:
        self.put_counter(conn, stage_counter(counts.stage), counts.to_dict())

    def record_scan(
        self, counts: ScanCounts, commit: PendingCommit, error: str | None = None
    ) -> None:
        """What the scan leaves the later stages: its counts, the listing's error, and what
        the write stage commits with the index."""
        with self.transaction() as conn:
            self.put_pending_commit(conn, commit)
            self.put_stage_counts(conn, counts)
            self.put_counter(conn, SCAN_ERROR, error)
            self.put_counter(conn, REPAIR, commit.repair.to_dict() if commit.repair else None)

    def pending_commit(self) -> PendingCommit | None:
        """What the scan of the run in progress left to commit (None: nothing, or committed)."""
        return PendingCommit.from_dict(self.counter(PENDING_COMMIT))

    def put_pending_commit(self, conn: sqlite3.Connection, commit: PendingCommit | None) -> None:
        self.put_counter(conn, PENDING_COMMIT, commit.to_dict() if commit else None)

    def scan_error(self) -> str | None:
        """Why the last scan's listing stopped early (None: it ran to the end)."""
        return self.counter(SCAN_ERROR)

    def run_counters(self) -> RunCounters:
        """What each stage of the run recorded so far (zeros for a stage that did not)."""

        def counts(name: str) -> dict[str, Any]:
            return self.counter(stage_counter(name)) or {}

        return RunCounters(
            scan=ScanCounts.from_dict(counts(ScanCounts.stage)),
            parse=ParseCounts.from_dict(counts(ParseCounts.stage)),
            chunk=ChunkCounts.from_dict(counts(ChunkCounts.stage)),
            screen=ScreenCounts.from_dict(counts(ScreenCounts.stage)),
            tag=TagCounts.from_dict(counts(TagCounts.stage)),
            embed=EmbedCounts.from_dict(counts(EmbedCounts.stage)),
            scan_error=self.scan_error(),
            repair=RepairPlan.from_dict(self.counter(REPAIR)),
        )

    def put_run_counters(self, conn: sqlite3.Connection, counters: RunCounters) -> None:
        """Record every stage's counts at once (a run that ran no stage: pipelines.idle)."""
        for counts in counters.stages():
            self.put_stage_counts(conn, counts)
        self.put_counter(conn, SCAN_ERROR, counters.scan_error)
        self.put_counter(conn, REPAIR, counters.repair.to_dict() if counters.repair else None)

    # -- completed runs ---------------------------------------------------------------

    def add_run(self, conn: sqlite3.Connection, summary: RunSummary) -> None:
        conn.execute(
            "INSERT INTO runs (finished_at, summary) VALUES (?, ?)",
            (utcnow(), json.dumps(summary.to_dict())),
        )

    def last_run(self) -> RecordedRun | None:
        row = self._conn.execute(
            "SELECT finished_at, summary FROM runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return RecordedRun(datetime.fromisoformat(row[0]), RunSummary.from_dict(json.loads(row[1])))


def text_hash(model_id: str, text: str) -> str:
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors keyed by (model, exact embedded text): unchanged text is never embedded twice."""

    def __init__(self, path: Path) -> None:
        self._conn = _connect(Path(path))
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER NOT NULL,"
            " vector BLOB NOT NULL)"
        )

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> EmbeddingCache:
        return cls(Path(state_dir) / "embedding-cache.sqlite")

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            rows = self._conn.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [
            (k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
            for k, v in items
        ]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO vectors (key, dim, vector) VALUES (?, ?, ?)", rows
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
