"""The ingestion stages of one source, each a plain function over the staging store.

Dagster assets (``assets/ingest.py``) are thin wrappers around these; they can
also run without Dagster. Each stage reads what the previous one left in the
:class:`~pipelines.store.StagingStore`, does the least work the change set
allows, and records its counts for the run summary. What passes between the
stages is typed: the change set's :class:`~pipelines.records.PendingDocument`
rows, each stage's counts and the scan's commit plan (:mod:`pipelines.run_records`).

Change classes, decided by :func:`scan_source` against the manifest:

* ``added`` / ``changed`` — parsed, chunked, tagged, embedded (unchanged chunk
  text comes from the embedding cache), written; stale chunks are replaced.
* ``unchanged`` — skipped before parsing.
* ``acl_only`` — the ACL in force changed but the content did not: the index's
  ACLs are updated; nothing is parsed or embedded.
* ``deleted`` — gone from the source: every chunk is removed from the index.
* ``failed_before`` — the same version failed last time: not retried until it changes.
* ``rewrite`` — unchanged, but the index lost it (see :mod:`pipelines.index_check`):
  written again from the copy the state folder keeps, vectors from the embedding
  cache; nothing parsed, nothing embedded unless the cache lost it too.

Documents of the source that the index holds and the manifest does not (an
older copy of the index restored, a state folder lost) are removed by the
write stage, so nothing the manifest does not vouch for keeps serving.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import Any

from connectors.base import Connector
from connectors.models import SourceDocument
from connectors.registry import open_connector
from core.acl import Acl
from core.acl_policy import AclPolicy
from pipelines import progress
from pipelines.config import InjectionConfig, PiiConfig, SourceConfig
from pipelines.errors import ParseError
from pipelines.index_check import IndexCheck
from pipelines.injection import score_text, screen_html
from pipelines.local_file import read_checked
from pipelines.models import Chunk, ParsedDocument
from pipelines.pii import apply_policy
from pipelines.records import (
    CONTENT_CHANGES,
    ChangeClass,
    FailedDocument,
    FailureReason,
    PendingDocument,
    count_changes,
)
from pipelines.run_records import (
    ChunkCounts,
    EmbedCounts,
    ParseCounts,
    PendingCommit,
    RepairPlan,
    RunSummary,
    ScanCounts,
    ScreenCounts,
    StageResult,
    TagCounts,
    WriteCounts,
)
from pipelines.store import (
    CURSOR,
    PERMISSION_SYNCED_AT,
    RETRY_IDS,
    EmbeddingCache,
    StagingStore,
    text_hash,
)
from pipelines.sync import compute_change_set
from retrieval.embedding.base import DocumentEncoder
from retrieval.index.base import ChunkRecord, IndexBackend, IndexGeneration, WriteBatch

log = logging.getLogger(__name__)


def source_document_of(pending: PendingDocument) -> SourceDocument:
    """The document to parse: what the scan recorded, its bytes staged, the ACL in force."""
    return pending.document.to_source_document()


def scan_source(
    config: SourceConfig,
    store: StagingStore,
    policy: AclPolicy,
    connector: Connector | None = None,
    index_check: IndexCheck | None = None,
    on_content_changes: Callable[[], object] | None = None,
) -> StageResult:
    """Ask the source what changed, assign ACLs, stage bytes, and record the change set.

    ``index_check`` (:func:`pipelines.index_check.check_index`, run just before)
    says what the index lacks: those documents are rewritten, and documents of
    the source it holds that the manifest does not are removed by the write.
    Without it the index is assumed to hold what the manifest says.

    ``on_content_changes`` is called once the change set is recorded and holds a
    document to parse (e.g. :func:`pipelines.parse_worker.prestart_parse_workers`, so
    the parsers load while the next steps start); an unchanged re-sync never calls it.
    """
    started = time.perf_counter()
    own = connector is None
    connector = connector or open_connector(config.scope(), config.connector_settings)
    now = datetime.now(UTC)
    try:
        scan = compute_change_set(
            config, store, policy, connector, now=now, index_check=index_check
        )
    finally:
        if own:
            connector.close()
    unreadable = FailureReason.UNREADABLE
    for failure in scan.failures:
        store.record_failure(failure.doc_id, failure.path, None, "read", failure.reason, unreadable)
    store.replace_pending(scan.rows)
    if on_content_changes is not None and any(r.change in CONTENT_CHANGES for r in scan.rows):
        on_content_changes()
    repair = _repair_plan(index_check, scan.refetched)
    commit = PendingCommit(
        cursor=scan.cursor,
        retry_ids=tuple(scan.retry_ids),
        permission_synced_at=now if scan.permission_synced else None,
        index_checked=index_check is not None,
        index_generation=index_check.current if index_check is not None else None,
        repair=repair,
    )
    counts = ScanCounts(
        changes=count_changes(scan.rows),
        documents_seen=scan.documents_seen,
        fetch_failures=len(scan.retry_ids),
        permission_sync=int(scan.permission_synced),
    )
    warnings: list[str] = []
    if index_check is not None and repair is not None:
        counts = dataclasses.replace(
            counts,
            index_missing_documents=len(index_check.missing),
            index_stale_documents=len(index_check.stale),
            index_orphaned_documents=len(index_check.orphaned),
            refetched=len(scan.refetched),
        )
        warnings.append(repair.reason)
        log.warning("source %s: %s", config.name, repair.reason)
    store.record_scan(counts, commit, scan.error)
    return StageResult(
        counts=counts.to_dict(),
        failures=[FailedDocument(f.path, f.reason, unreadable) for f in scan.failures],
        seconds=time.perf_counter() - started,
        error=scan.error,
        warnings=warnings,
    )


def _repair_plan(check: IndexCheck | None, refetched: list[str]) -> RepairPlan | None:
    """What this run does about an index that disagrees with the manifest (None: it agrees)."""
    if check is None or check.ok:
        return None
    return RepairPlan(
        reason=check.describe(),
        to_rewrite=tuple(sorted(check.to_rewrite)),
        orphans=tuple(check.orphaned),
        refetched=tuple(refetched),
    )


ParseFn = Callable[[SourceDocument], ParsedDocument]


def parse_pending(store: StagingStore, parse: ParseFn) -> StageResult:
    """Parse the added and changed documents; a failure is recorded, the batch goes on.

    When ``parse`` has a ``concurrency`` above 1 (the worker pool from
    :func:`pipelines.parse_worker.make_parse_fn`), that many documents are parsed
    at once, each call from its own thread; otherwise one at a time, here. Results
    are stored from this thread only, and failures are listed in document order,
    so the outcome is the same whichever document finishes first.
    """

    def attempt(doc: SourceDocument) -> ParsedDocument | FailedDocument:
        try:
            return parse(doc)
        except ParseError as exc:
            return FailedDocument(doc.path, str(exc), FailureReason(exc.reason_class))
        except Exception as exc:  # a parser bug must not take down the batch
            reason = f"parser error: {type(exc).__name__}: {exc}"
            return FailedDocument(doc.path, reason, FailureReason.PARSER_CRASH)

    started = time.perf_counter()
    docs = [source_document_of(row) for row in store.pending(*CONTENT_CHANGES)]
    threads = min(max(1, int(getattr(parse, "concurrency", 1))), len(docs))
    parsed = 0
    failed: dict[int, FailedDocument] = {}

    def record(i: int, outcome: ParsedDocument | FailedDocument) -> None:
        nonlocal parsed
        if isinstance(outcome, ParsedDocument):
            store.put_parsed(outcome)
            parsed += 1
            return
        doc = docs[i]
        store.record_failure(
            doc.doc_id, doc.path, doc.version, "parse", outcome.reason, outcome.reason_class
        )
        failed[i] = outcome

    with progress.task("parse", len(docs)) as advance:
        if threads <= 1:
            for i, doc in enumerate(docs):
                record(i, attempt(doc))
                advance()
        else:
            # Largest first: the pool's last minutes are small files on every worker,
            # not one big file on one worker while the others idle
            # (docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way).
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
    counts = ParseCounts(parsed, tuple(failures))
    store.record_stage(counts)
    return StageResult(
        counts=counts.counts(), failures=failures, seconds=time.perf_counter() - started
    )


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
    counts = ChunkCounts(total)
    store.record_stage(counts)
    return StageResult(counts=counts.to_dict(), seconds=time.perf_counter() - started)


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
    started = time.perf_counter()
    pii_found: dict[str, int] = {}
    flagged = dropped_injection = dropped_pii = screened = 0
    for row in store.pending(*CONTENT_CHANGES):
        staged = [chunk for chunk, _ in store.chunks(row.doc_id)]
        if not staged:
            continue
        result = apply_policy(staged, pii.policy, pii.types)
        for kind, n in result.counts.items():
            pii_found[kind] = pii_found.get(kind, 0) + n
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
    counts = ScreenCounts(
        pii_found=pii_found,
        chunks_screened=screened,
        injection_flagged=flagged,
        injection_dropped=dropped_injection,
        pii_chunks_dropped=dropped_pii,
    )
    store.record_stage(counts)
    return StageResult(counts=counts.to_dict(), seconds=time.perf_counter() - started)


def _hidden_html_text(row: PendingDocument, screen_html: Callable[[str], list[str]]) -> list[str]:
    """Text a browser would not show (hidden styles, comments) in an HTML source document."""
    path = row.document.local_path
    if row.document.doc_type not in ("html", "htm") or not path:
        return []
    try:
        # Never by path alone: a file swapped for a link since the scan is not read.
        data = read_checked(path, row.document.identity)
    except ParseError:
        return []
    raw = data.decode("utf-8", errors="replace")
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
    counts = TagCounts(tagged, fail_closed, acl_only=len(store.pending(ChangeClass.ACL_ONLY)))
    store.record_stage(counts)
    return StageResult(counts=counts.to_dict(), seconds=time.perf_counter() - started)


def embed_pending(
    store: StagingStore, embedder: DocumentEncoder, cache: EmbeddingCache, batch_size: int = 256
) -> StageResult:
    """Embed chunk texts not already in the cache; unchanged text is reused, never re-embedded."""
    started = time.perf_counter()
    texts = [
        c.embedding_text for doc_id in _content_doc_ids(store) for c, _ in store.chunks(doc_id)
    ]
    # Documents the index lost: their kept chunks, normally all in the cache already.
    texts += [
        embedding_text(record, context)
        for row in store.pending(ChangeClass.REWRITE)
        for record, context in store.indexed_chunks(row.doc_id)
    ]
    keys = [text_hash(embedder.model_id, text) for text in texts]
    cached = cache.get_many(sorted(set(keys)))
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in cached and key not in missing:
            missing[key] = text
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
    counts = EmbedCounts(chunks_embedded=len(todo), chunks_reused=len(texts) - len(todo))
    store.record_stage(counts)
    return StageResult(counts=counts.to_dict(), seconds=time.perf_counter() - started)


def embedding_text(record: ChunkRecord, context: str) -> str:
    """The text a kept chunk was embedded from (what :attr:`Chunk.embedding_text` gave)."""
    chunk = Chunk(
        record.chunk_id,
        record.doc_id,
        record.ord,
        record.text,
        record.char_start,
        record.char_end,
        context=context,
    )
    return chunk.embedding_text


def _content_doc_ids(store: StagingStore) -> list[str]:
    return [row.doc_id for row in store.pending(*CONTENT_CHANGES)]


def write_pending(
    store: StagingStore, index: IndexBackend, cache: EmbeddingCache, model_id: str
) -> StageResult:
    """Apply the change set to the index atomically, then commit the manifest.

    The manifest is written only after the index committed: a crash in between
    makes the next run redo these documents, which is idempotent (upserts replace
    a document's chunks; vectors come from the cache). With it go the copy of
    every chunk written (for rewriting a lost index) and the index generation
    the manifest now describes.
    """
    started = time.perf_counter()
    batch = WriteBatch()
    indexed: list[tuple[PendingDocument, list[tuple[ChunkRecord, str]]]] = []
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
        doc = source_document_of(row)
        written: list[tuple[ChunkRecord, str]] = []
        for (chunk, acl), key in zip(staged, keys, strict=True):
            record = ChunkRecord(
                chunk_id=chunk.chunk_id,
                doc_id=row.doc_id,
                source=doc.source,
                ord=chunk.ord,
                text=chunk.text,
                title=parsed.title,
                uri=doc.uri,
                path=doc.path,
                section=chunk.section,
                pages=chunk.pages,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                doc_version=doc.version,
                doc_type=doc.doc_type,
                modified_at=doc.modified_at,
                acl=acl if acl is not None else Acl.empty(),
                vector=vectors[key],
                metadata=notes.get(chunk.chunk_id, {}),
            )
            batch.upserts.append(record)
            written.append((record, chunk.context))
        indexed.append((row, written))
    rewritten = store.pending(ChangeClass.REWRITE)
    for row in rewritten:
        batch.upserts.extend(_kept_records(store, row, cache, model_id))
    acl_only = store.pending(ChangeClass.ACL_ONLY)
    for row in acl_only:
        batch.acl_updates[row.doc_id] = row.acl
    deleted = store.pending(ChangeClass.DELETED)
    batch.delete_docs |= {row.doc_id for row in deleted}
    commit = store.pending_commit()
    repair = commit.repair if commit is not None and commit.repair else RepairPlan("")
    # In the index, not in the manifest: deleted before an older copy of the index
    # came back, or indexed under a lost state folder. A document also upserted
    # here stays (a batch deletes first, then upserts).
    batch.delete_docs |= set(repair.orphans)
    if not batch.empty:
        index.apply(batch)

    indexed_ids = {row.doc_id for row, _ in indexed}
    handled = indexed_ids | {r.doc_id for r in [*rewritten, *deleted]}
    counts = WriteCounts(
        chunks_written=len(batch.upserts),
        documents_indexed=len(indexed),
        documents_deleted=len(deleted),
        acl_updates=len(acl_only),
        documents_rewritten=len(rewritten),
        documents_refetched=len(set(repair.refetched) & indexed_ids),
        orphans_removed=len(repair.orphans),
        # Lost by the index and still missing: e.g. parsed again, and it failed.
        documents_not_repaired=len(set(repair.to_rewrite) - handled),
    )
    generation = _generation_to_record(commit, index, counts.documents_not_repaired)
    with store.transaction() as conn:
        for row, written in indexed:
            store.record_indexed(
                conn,
                row.doc_id,
                row.path,
                source_document_of(row).version,
                row.acl.fingerprint(),
                [record.chunk_id for record, _ in written],
                acl=row.acl,
            )
            store.put_indexed_chunks(conn, row.doc_id, written)
        for row in [*acl_only, *rewritten]:
            store.record_acl(conn, row.doc_id, row.acl.fingerprint(), row.acl)
        for row in deleted:
            store.record_deleted(conn, row.doc_id)
        store.record_seen(
            conn,
            [r.doc_id for r in store.pending(ChangeClass.UNCHANGED, ChangeClass.FAILED_BEFORE)],
        )
        if commit is not None:
            # The source's cursor moves only with the index and manifest it describes.
            store.put_counter(conn, CURSOR, commit.cursor)
            store.put_counter(conn, RETRY_IDS, list(commit.retry_ids))
            if commit.permission_synced_at:
                synced = commit.permission_synced_at.isoformat()
                store.put_counter(conn, PERMISSION_SYNCED_AT, synced)
            if commit.index_checked:
                store.put_index_generation(conn, generation)
            store.put_pending_commit(conn, None)
        store.clear_stage_data(conn)
        # Inside the transaction, so failures cleared by this run are not reported.
        store.add_run(conn, RunSummary.of(store.run_counters(), counts, store.failures()))
    return StageResult(counts=counts.to_dict(), seconds=time.perf_counter() - started)


def _kept_records(
    store: StagingStore, row: PendingDocument, cache: EmbeddingCache, model_id: str
) -> list[ChunkRecord]:
    """A lost document's chunks from the state folder's copy, with the ACL in force now."""
    kept = store.indexed_chunks(row.doc_id)
    keys = [text_hash(model_id, embedding_text(record, context)) for record, context in kept]
    vectors = cache.get_many(keys)
    return [
        dataclasses.replace(record, acl=row.acl, vector=vectors[key])
        for (record, _), key in zip(kept, keys, strict=True)
    ]


def _generation_to_record(
    commit: PendingCommit | None, index: IndexBackend, not_repaired: int
) -> IndexGeneration | None:
    """The generation the manifest describes after this run; None when it cannot vouch for one.

    Recorded, a later run that finds the index at exactly this generation trusts it
    without reading it. So it is recorded only when this run's check saw the index
    and every document found missing or stale was written or deleted; else None,
    and the next run compares document by document again.
    """
    if commit is None or not commit.index_checked or not_repaired:
        return None
    now = index.index_generation()
    checked = commit.index_generation
    if now is None or (
        checked is not None
        and (now.index_id != checked.index_id or now.sequence < checked.sequence)
    ):
        # The index was swapped between the check and this write: it is not the one
        # the check compared.
        return None
    return now
