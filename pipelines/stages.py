"""The ingestion stages of one source, each a plain function over the staging store.

Dagster assets (``assets/ingest.py``) are thin wrappers around these; they can
also run without Dagster. Each stage reads what the previous one left in the
:class:`~pipelines.store.StagingStore`, does the least work the change set
allows, and records its counters for the run summary.

Change classes, decided by :func:`scan_source` against the manifest:

* ``added`` / ``changed`` — parsed, chunked, tagged, embedded (unchanged chunk
  text comes from the embedding cache), written; stale chunks are replaced.
* ``unchanged`` — skipped before parsing.
* ``acl_only`` — the ACL in force changed but the content did not: the index's
  ACLs are updated; nothing is parsed or embedded.
* ``deleted`` — gone from the source: every chunk is removed from the index.
* ``failed_before`` — the same version failed last time: not retried until it changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from connectors.base import Connector
from connectors.models import SourceDocument
from connectors.registry import open_connector
from pipelines import progress
from pipelines.models import Chunk, ParsedDocument
from pipelines.secure import AclPolicy
from pipelines.store import (
    EmbeddingCache,
    PendingDocument,
    StagingStore,
    text_hash,
)
from pipelines.sync import (
    ACL_ONLY,
    ADDED,
    CHANGED,
    CONTENT_CHANGES,
    CURSOR,
    DELETED,
    FAILED_BEFORE,
    PENDING_COMMIT,
    PERMISSION_SYNCED_AT,
    RETRY_IDS,
    UNCHANGED,
    compute_change_set,
)
from retrieval.index.base import ChunkRecord, IndexBackend, WriteBatch
from trove.acl import Acl
from trove.config import InjectionConfig, PiiConfig, SourceConfig

FAILED = "failed"


@dataclass
class StageResult:
    """What a stage did: counters for metadata and summaries, failures with reasons."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the stage finished, but not everything (e.g. a cut-short listing)


def source_document_of(pending: PendingDocument) -> SourceDocument:
    d = pending.document
    return SourceDocument(
        doc_id=d["doc_id"],
        source=d["source"],
        path=d["path"],
        uri=d["uri"],
        title=d["title"],
        version=d["version"],
        size=d["size"],
        modified_at=datetime.fromisoformat(d["modified_at"]) if d["modified_at"] else None,
        doc_type=d["doc_type"],
        acl=Acl.from_dict(d["acl"]),
        local_path=Path(d["local_path"]) if d["local_path"] else None,
    )


def count_changes(rows: list[PendingDocument]) -> dict[str, int]:
    counts = {c: 0 for c in (ADDED, CHANGED, UNCHANGED, DELETED, ACL_ONLY, FAILED_BEFORE)}
    for row in rows:
        counts[row.change] += 1
    return counts


def scan_source(
    config: SourceConfig,
    store: StagingStore,
    policy: AclPolicy,
    connector: Connector | None = None,
) -> StageResult:
    """Ask the source what changed, assign ACLs, stage bytes, and record the change set."""
    started = time.perf_counter()
    own = connector is None
    connector = connector or open_connector(config)
    now = datetime.now(UTC)
    try:
        scan = compute_change_set(config, store, policy, connector, now=now)
    finally:
        if own:
            connector.close()
    for failure in scan.failures:
        store.record_failure(
            failure.doc_id, failure.path, None, "read", failure.reason, "unreadable"
        )
    store.replace_pending(scan.rows)
    store.set_counter(
        PENDING_COMMIT,
        {
            "cursor": scan.cursor,
            "retry_ids": scan.retry_ids,
            "permission_synced_at": now.isoformat() if scan.permission_synced else None,
        },
    )
    counts = count_changes(scan.rows)
    counts["documents_seen"] = scan.documents_seen
    counts["fetch_failures"] = len(scan.retry_ids)
    counts["permission_sync"] = int(scan.permission_synced)
    result = StageResult(
        counts=counts,
        failures=[{"path": f.path, "reason": f.reason} for f in scan.failures],
        seconds=time.perf_counter() - started,
        error=scan.error,
    )
    store.set_counter("run.scan", result.counts)
    store.set_counter("run.scan_error", scan.error)
    return result


ParseFn = Callable[[SourceDocument], ParsedDocument]


def parse_pending(store: StagingStore, parse: ParseFn) -> StageResult:
    """Parse the added and changed documents; a failure is recorded, the batch goes on.

    When ``parse`` has a ``concurrency`` above 1 (the worker pool from
    :func:`pipelines.parse_worker.make_parse_fn`), that many documents are parsed
    at once, each call from its own thread; otherwise one at a time, here. Results
    are stored from this thread only, and failures are listed in document order,
    so the outcome is the same whichever document finishes first.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from pipelines.errors import ParseError

    def attempt(doc: SourceDocument) -> tuple[ParsedDocument | None, str, str]:
        try:
            return parse(doc), "", ""
        except ParseError as exc:
            return None, str(exc), getattr(exc, "reason_class", "malformed")
        except Exception as exc:  # a parser bug must not take down the batch
            return None, f"parser error: {type(exc).__name__}: {exc}", "parser_crash"

    started = time.perf_counter()
    docs = [source_document_of(row) for row in store.pending(*CONTENT_CHANGES)]
    threads = min(max(1, int(getattr(parse, "concurrency", 1))), len(docs))
    parsed = 0
    failed: dict[int, dict[str, str]] = {}

    def record(i: int, outcome: tuple[ParsedDocument | None, str, str]) -> None:
        nonlocal parsed
        result, reason, reason_class = outcome
        if result is not None:
            store.put_parsed(result)
            parsed += 1
            return
        doc = docs[i]
        store.record_failure(doc.doc_id, doc.path, doc.version, "parse", reason, reason_class)
        failed[i] = {"path": doc.path, "reason": reason, "reason_class": reason_class}

    with progress.task("parse", len(docs)) as advance:
        if threads <= 1:
            for i, doc in enumerate(docs):
                record(i, attempt(doc))
                advance()
        else:
            # Largest first: the pool's last minutes are small files on every worker,
            # not one big file on one worker while the others idle (18F handbook on
            # two workers: 3.5 -> 3.2 s).
            largest_first = sorted(range(len(docs)), key=lambda i: -(docs[i].size or 0))
            with ThreadPoolExecutor(threads, thread_name_prefix="trove-parse") as pool:
                futures = {pool.submit(attempt, docs[i]): i for i in largest_first}
                try:
                    for future in as_completed(futures):
                        record(futures[future], future.result())
                        advance()
                except BaseException:
                    for future in futures:
                        future.cancel()  # documents not started yet; running ones finish
                    raise
    failures = [failed[i] for i in sorted(failed)]
    # A failed document keeps its previously indexed version serving.
    store.drop_pending([docs[i].doc_id for i in sorted(failed)])
    result = StageResult(
        counts={"documents_parsed": parsed, "documents_failed": len(failures)},
        failures=failures,
        seconds=time.perf_counter() - started,
    )
    store.set_counter("run.parse", {**result.counts, "failures": failures})
    return result


ChunkFn = Callable[[ParsedDocument], list[Chunk]]


def chunk_pending(store: StagingStore, chunk: ChunkFn) -> StageResult:
    started = time.perf_counter()
    doc_ids = [row.doc_id for row in store.pending(*CONTENT_CHANGES)]
    total = 0
    with progress.task("chunk", len(doc_ids)) as advance:
        for doc_id in doc_ids:
            parsed = store.get_parsed(doc_id)
            if parsed is None:
                continue
            chunks = chunk(parsed)
            store.put_chunks(doc_id, chunks)
            total += len(chunks)
            advance()
    result = StageResult(counts={"chunks": total}, seconds=time.perf_counter() - started)
    store.set_counter("run.chunk", result.counts)
    return result


def screen_pending(store: StagingStore, pii: PiiConfig, injection: InjectionConfig) -> StageResult:
    """Content safety for changed documents' chunks, before anything is embedded or stored.

    * PII and secrets: ``tag`` records counts per type on the chunk, ``redact``
      replaces each value with a typed placeholder in the text *and* the context
      (so neither the index nor the vectors hold it), ``drop`` skips the chunk.
    * Prompt injection: every chunk is scored (hidden HTML text that made it into
      the chunk counts too); at or above the threshold a chunk is flagged
      (``risk`` in every search result) or, with ``drop``, skipped.

    Only counts per type are recorded, never the values.
    """
    from pipelines.injection import score_text, screen_html
    from pipelines.pii import apply_policy

    started = time.perf_counter()
    counts: dict[str, int] = {}
    flagged = dropped_injection = dropped_pii = screened = 0
    for row in store.pending(*CONTENT_CHANGES):
        staged = [chunk for chunk, _ in store.chunks(row.doc_id)]
        if not staged:
            continue
        result = apply_policy(staged, pii.policy, pii.types)
        for kind, n in result.counts.items():
            counts[f"pii_{kind}"] = counts.get(f"pii_{kind}", 0) + n
        dropped_pii += result.dropped
        hidden = _hidden_html_text(row, screen_html)
        kept: list[Chunk] = []
        annotations: dict[str, dict[str, Any]] = {}
        for chunk in result.chunks:
            screened += 1
            verdict = score_text(chunk.text)
            score, signals = verdict.score, list(verdict.signals)
            for snippet in hidden:
                if snippet in chunk.text:
                    extra = score_text(snippet)
                    score = max(score, extra.score)
                    signals = sorted({*signals, "hidden_text", *extra.signals})
            note: dict[str, Any] = {}
            if result.findings_by_chunk.get(chunk.chunk_id):
                note["pii"] = dict(result.findings_by_chunk[chunk.chunk_id])
            if score >= injection.threshold:
                if injection.policy == "drop":
                    dropped_injection += 1
                    continue
                flagged += 1
                note["risk"] = [
                    {"type": "prompt_injection", "score": round(score, 3), "signals": signals}
                ]
            kept.append(chunk)
            if note:
                annotations[chunk.chunk_id] = note
        store.put_chunks(row.doc_id, kept)
        store.set_annotations(annotations)
    counts.update(
        {
            "chunks_screened": screened,
            "injection_flagged": flagged,
            "injection_dropped": dropped_injection,
            "pii_chunks_dropped": dropped_pii,
        }
    )
    result_ = StageResult(counts=counts, seconds=time.perf_counter() - started)
    store.set_counter("run.screen", result_.counts)
    return result_


def _hidden_html_text(row: PendingDocument, screen_html: Callable[[str], list[str]]) -> list[str]:
    """Text a browser would not show (hidden styles, comments) in an HTML source document."""
    path = row.document.get("local_path")
    if row.document.get("doc_type") not in ("html", "htm") or not path:
        return []
    try:
        raw = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [s.strip() for s in screen_html(raw) if s.strip()]


def tag_pending(store: StagingStore) -> StageResult:
    """Give every chunk of a changed document the document's ACL (decided at scan time)."""
    started = time.perf_counter()
    tagged = fail_closed = 0
    for row in store.pending(*CONTENT_CHANGES):
        acl = row.acl
        n = store.set_chunk_acl(row.doc_id, acl)
        tagged += n
        if not acl.grants_anyone:
            fail_closed += n
    acl_only = len(store.pending(ACL_ONLY))
    result = StageResult(
        counts={"chunks_tagged": tagged, "chunks_fail_closed": fail_closed, "acl_only": acl_only},
        seconds=time.perf_counter() - started,
    )
    store.set_counter("run.tag", result.counts)
    return result


class Encoder(Protocol):
    """What the embed stage needs from an embedder (see :class:`pipelines.embed.Embedder`)."""

    model_id: str

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...


def embed_pending(
    store: StagingStore, embedder: Encoder, cache: EmbeddingCache, batch_size: int = 256
) -> StageResult:
    """Embed chunk texts not already in the cache; unchanged text is reused, never re-embedded."""
    started = time.perf_counter()
    chunks = [c for doc_id in _content_doc_ids(store) for c, _ in store.chunks(doc_id)]
    keys = [text_hash(embedder.model_id, c.embedding_text) for c in chunks]
    cached = cache.get_many(sorted(set(keys)))
    missing: dict[str, str] = {}
    for key, chunk in zip(keys, chunks, strict=True):
        if key not in cached and key not in missing:
            missing[key] = chunk.embedding_text
    # Longest first across the whole change set, not just within one call: each
    # batch then holds texts of similar length and pads little (the encoders
    # sort only inside the slice they are given).
    todo = sorted(missing.items(), key=lambda item: len(item[1]), reverse=True)
    with progress.task("embed", len(todo)) as advance:
        for start in range(0, len(todo), batch_size):
            part = todo[start : start + batch_size]
            vectors = embedder.encode_documents([text for _, text in part])
            cache.put_many(zip([k for k, _ in part], vectors, strict=True))
            advance(len(part))
    result = StageResult(
        counts={"chunks_embedded": len(todo), "chunks_reused": len(chunks) - len(todo)},
        seconds=time.perf_counter() - started,
    )
    store.set_counter("run.embed", result.counts)
    return result


def _content_doc_ids(store: StagingStore) -> list[str]:
    return [row.doc_id for row in store.pending(*CONTENT_CHANGES)]


def write_pending(
    store: StagingStore, index: IndexBackend, cache: EmbeddingCache, model_id: str
) -> StageResult:
    """Apply the change set to the index atomically, then commit the manifest.

    The manifest is written only after the index committed: a crash in between
    makes the next run redo these documents, which is idempotent (upserts replace
    a document's chunks; vectors come from the cache).
    """
    started = time.perf_counter()
    batch = WriteBatch()
    indexed: list[tuple[PendingDocument, list[str]]] = []
    for row in store.pending(*CONTENT_CHANGES):
        parsed = store.get_parsed(row.doc_id)
        staged = store.chunks(row.doc_id)
        if parsed is None:
            continue
        if not staged:
            # Every chunk was dropped by policy: the document is indexed as empty
            # (its old chunks go), so it is not reprocessed on every run.
            batch.delete_docs.add(row.doc_id)
            indexed.append((row, []))
            continue
        keys = [text_hash(model_id, c.embedding_text) for c, _ in staged]
        vectors = cache.get_many(keys)
        notes = store.annotations(row.doc_id)
        d = row.document
        modified = datetime.fromisoformat(d["modified_at"]) if d.get("modified_at") else None
        for (chunk, acl), key in zip(staged, keys, strict=True):
            batch.upserts.append(
                ChunkRecord(
                    chunk_id=chunk.chunk_id,
                    doc_id=row.doc_id,
                    source=d["source"],
                    ord=chunk.ord,
                    text=chunk.text,
                    title=parsed.title,
                    uri=d["uri"],
                    path=d["path"],
                    section=chunk.section,
                    pages=chunk.pages,
                    char_start=chunk.char_start,
                    char_end=chunk.char_end,
                    doc_version=d["version"],
                    doc_type=d["doc_type"],
                    modified_at=modified,
                    acl=acl if acl is not None else Acl.empty(),
                    vector=vectors[key],
                    metadata=notes.get(chunk.chunk_id, {}),
                )
            )
        indexed.append((row, [c.chunk_id for c, _ in staged]))
    acl_only = store.pending(ACL_ONLY)
    for row in acl_only:
        batch.acl_updates[row.doc_id] = row.acl
    deleted = store.pending(DELETED)
    batch.delete_docs |= {row.doc_id for row in deleted}
    if not batch.empty:
        index.apply(batch)

    counts = {
        "chunks_written": len(batch.upserts),
        "documents_indexed": len(indexed),
        "documents_deleted": len(deleted),
        "acl_updates": len(acl_only),
    }
    with store.transaction() as conn:
        for row, chunk_ids in indexed:
            store.record_indexed(
                conn,
                row.doc_id,
                row.path,
                row.document["version"],
                row.acl.fingerprint(),
                chunk_ids,
            )
        for row in acl_only:
            store.record_acl(conn, row.doc_id, row.acl.fingerprint())
        for row in deleted:
            store.record_deleted(conn, row.doc_id)
        store.record_seen(conn, [r.doc_id for r in store.pending(UNCHANGED, FAILED_BEFORE)])
        commit = store.counter(PENDING_COMMIT)
        if commit is not None:
            # The source's cursor moves only with the index and manifest it describes.
            store.put_counter(conn, CURSOR, commit["cursor"])
            store.put_counter(conn, RETRY_IDS, commit["retry_ids"])
            if commit["permission_synced_at"]:
                store.put_counter(conn, PERMISSION_SYNCED_AT, commit["permission_synced_at"])
            store.put_counter(conn, PENDING_COMMIT, None)
        store.clear_stage_data(conn)
        # Inside the transaction, so failures cleared by this run are not reported.
        store.add_run(conn, run_summary(store, counts))
    return StageResult(counts=counts, seconds=time.perf_counter() - started)


def run_summary(store: StagingStore, write_counts: dict[str, int]) -> dict[str, Any]:
    """The per-source ingest summary, from the counters each stage recorded this run."""
    scan = store.counter("run.scan", {})
    parse = store.counter("run.parse", {})
    embed = store.counter("run.embed", {})
    screen = store.counter("run.screen", {})
    failures = [
        {"path": f["path"], "reason": f["reason"], "reason_class": f["reason_class"]}
        for f in store.failures()
    ]
    return {
        "documents_seen": scan.get("documents_seen", 0),
        "documents_parsed": parse.get("documents_parsed", 0),
        "documents_failed": failures,
        "chunks_written": write_counts["chunks_written"],
        "chunks_embedded": embed.get("chunks_embedded", 0),
        "chunks_reused": embed.get("chunks_reused", 0),
        "unchanged": scan.get(UNCHANGED, 0) + scan.get(FAILED_BEFORE, 0),
        "changed": scan.get(CHANGED, 0),
        "added": scan.get(ADDED, 0),
        "deleted": scan.get(DELETED, 0),
        "acl_only": scan.get(ACL_ONLY, 0),
        "quarantined": len(failures),
        "pii_found": {
            k[4:]: v
            for k, v in screen.items()
            if k.startswith("pii_") and k != "pii_chunks_dropped"
        },
        "injection_flagged": screen.get("injection_flagged", 0),
        "chunks_dropped": screen.get("injection_dropped", 0) + screen.get("pii_chunks_dropped", 0),
        # Set when the source's listing stopped early: what was gathered is indexed
        # and the next run resumes from the last committed batch.
        "sync_error": store.counter("run.scan_error"),
    }
