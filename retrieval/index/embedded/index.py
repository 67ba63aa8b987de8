"""``EmbeddedIndex``: the on-disk hybrid index every Trove install runs by default.

Layout of an index directory::

    CURRENT                       the committed generation number (the commit point)
    LOCK                          flock'ed by the single writer
    manifest-<generation>.json    live segments, with their tombstone and ACL side files
    segments/<id>/                immutable segments (see segment.py)
    side/<id>.del-<gen>.npy       tombstones of a segment as of a generation
    side/<id>.acl-<gen>.{json,npy}  replaced ACLs of a segment as of a generation

A write never modifies a file: it writes new ones, fsyncs them and swaps
``CURRENT`` (see manifest.py), so readers in this or other processes keep
answering from the generation they loaded and a crash leaves the last commit.
Files of the current and the previous generation are kept; older ones are
removed after each commit. Readers load every file of a generation when they
open or refresh it (arrays memory-mapped), so a later removal does not affect
them on POSIX systems.

Example::

    index = EmbeddedIndex.open(".trove/index", create=True, dimensions=384)
    index.apply(WriteBatch(upserts=records))
    hits = index.search_lexical("per diem", Principal.of("alice", ["staff"]), k=10)
"""

from __future__ import annotations

import dataclasses
import fcntl
import secrets
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.acl import Acl, Principal
from retrieval.analysis import DEFAULT_ANALYZER, Analyzer
from retrieval.index.base import (
    ChunkRecord,
    DocumentState,
    IndexBackendError,
    IndexCorruptError,
    IndexGeneration,
    IndexNotFoundError,
    IndexStats,
    InvalidBatchError,
    WriteBatch,
    new_generation_token,
    validate_upserts,
)
from retrieval.index.embedded import ranking
from retrieval.index.embedded.acl_table import AclTable
from retrieval.index.embedded.bm25 import Bm25Params
from retrieval.index.embedded.files import fsync_dir, save_npy
from retrieval.index.embedded.int8_kernel import resolve_setting, select
from retrieval.index.embedded.manifest import (
    CURRENT,
    Manifest,
    SegmentEntry,
    manifest_name,
    read_current,
    read_manifest,
    write_current,
    write_manifest,
)
from retrieval.index.embedded.merge_policy import plan_merge
from retrieval.index.embedded.ranking import dense_top_k, lexical_top_k
from retrieval.index.embedded.segment import (
    Segment,
    build_from_records,
    merge_segments,
    write_segment,
)
from retrieval.index.embedded.snapshot import SegmentView, Snapshot, document_states_of
from retrieval.models import NO_FILTERS, ScoredId, SearchFilters

SEGMENTS = "segments"
SIDE = "side"
LOCK = "LOCK"
KEEP_GENERATIONS = 2
_LOAD_ATTEMPTS = 5


class EmbeddedIndex:
    """Hybrid BM25 + dense index in a local directory; implements ``IndexBackend``."""

    def __init__(
        self,
        root: Path,
        *,
        analyzer: Analyzer = DEFAULT_ANALYZER,
        bm25: Bm25Params | None = None,
        dimensions: int | None = None,
        dense_kernel: str | None = None,
    ):
        # Use EmbeddedIndex.open(): the constructor does not touch the disk.
        self.root = root
        self.dense_kernel = resolve_setting(dense_kernel)
        self.analyzer = analyzer
        self.bm25 = bm25 or Bm25Params()
        self._expected_dimensions = dimensions
        self._segments: dict[str, Segment] = {}
        self._snapshot: Snapshot | None = None
        self._load_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        dimensions: int | None = None,
        analyzer: Analyzer = DEFAULT_ANALYZER,
        bm25: Bm25Params | None = None,
        dense_kernel: str | None = None,
    ) -> EmbeddedIndex:
        """Open the index at ``path`` at its latest committed generation.

        :param create: make an empty index when none exists (else :class:`IndexNotFoundError`).
        :param dimensions: the vector size this caller will write and query with; checked
            against an existing index, recorded in a new one (else set by the first upsert).
        :param dense_kernel: the dense first pass's kernel: ``auto`` (torch's, where a
            child process verified it; else numpy) or ``numpy``; None reads
            ``$TROVE_INDEX__DENSE_KERNEL`` (default ``auto``). See docs/dense-kernel.md.
        :raises IndexNotFoundError: no index at ``path`` and ``create`` is false.
        :raises IndexCorruptError: the files are unreadable or inconsistent.
        """
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        root = Path(path).expanduser().resolve()
        index = cls(
            root, analyzer=analyzer, bm25=bm25, dimensions=dimensions, dense_kernel=dense_kernel
        )
        if not (root / CURRENT).exists():
            if not create:
                raise IndexNotFoundError(f"no index at {root}; run `trove ingest` to build one")
            root.mkdir(parents=True, exist_ok=True)
            with index._writer():
                if not (root / CURRENT).exists():
                    (root / SEGMENTS).mkdir(exist_ok=True)
                    (root / SIDE).mkdir(exist_ok=True)
                    fsync_dir(root)
                    first = IndexGeneration.first()
                    manifest = Manifest(
                        0,
                        dimensions or 0,
                        analyzer.name,
                        index_id=first.index_id,
                        commit=first.commit,
                    )
                    write_manifest(root, manifest)
                    write_current(root, 0)
        index._snapshot = index._load_latest()
        existing = index._snapshot.manifest.dimensions
        if dimensions is not None and existing and existing != dimensions:
            raise IndexBackendError(
                f"the index at {root} holds {existing}-dimensional vectors, the caller uses "
                f"{dimensions}; rebuild the index after changing the embedding model"
            )
        return index

    def refresh(self) -> bool:
        """Move to the newest committed generation; True when it changed."""
        snap = self._snap()
        if read_current(self.root) == snap.generation:
            return False
        self._snapshot = self._load_latest()
        return True

    @property
    def generation(self) -> int:
        return self._snap().generation

    def index_generation(self) -> IndexGeneration | None:
        """The committed generation (None for an index older than generation ids, until
        its next commit gives it one)."""
        return self._snap().manifest.index_generation()

    def warm_up(self) -> None:
        """Load now what the first dense search would: the int8 copies and their kernel.

        The kernel is torch's, verified in a child process the first time on a
        machine (int8_kernel.py, a few seconds, then cached on disk), and importing
        torch takes seconds: a server calls this at start-up so that its first request
        does not wait. Nothing to do when every segment is small enough for the
        float32 scan, or with ``dense_kernel="numpy"``.
        """
        large = [
            v.segment for v in self._snap().views if v.segment.rows >= ranking.QUANTIZED_MIN_ROWS
        ]
        if large:
            select(large[0].dimensions, self.dense_kernel)
            for segment in large:
                segment.quantized()

    def close(self) -> None:
        self._closed = True
        self._snapshot = None
        self._segments = {}

    def __enter__(self) -> EmbeddedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _snap(self) -> Snapshot:
        snap = self._snapshot
        if snap is None or self._closed:
            raise IndexBackendError(f"the index at {self.root} is closed")
        return snap

    def _load_latest(self) -> Snapshot:
        last_error: Exception | None = None
        for _ in range(_LOAD_ATTEMPTS):
            generation = read_current(self.root)
            try:
                return self._load(generation)
            except (FileNotFoundError, IndexCorruptError) as exc:
                # A writer may have committed twice and collected this generation's files
                # between our reading CURRENT and opening them: retry on the newer one.
                if read_current(self.root) == generation:
                    if isinstance(exc, IndexCorruptError):
                        raise
                    raise IndexCorruptError(
                        f"generation {generation} of {self.root} is missing a file: {exc}"
                    ) from exc
                last_error = exc
        raise IndexCorruptError(
            f"could not load a stable generation of {self.root}: {last_error}"
        ) from last_error

    def _load(self, generation: int) -> Snapshot:
        manifest = read_manifest(self.root, generation)
        if manifest.analyzer != self.analyzer.name:
            raise IndexCorruptError(
                f"the index at {self.root} was built with analyzer {manifest.analyzer!r}, this "
                f"Trove uses {self.analyzer.name!r}; delete the index and run `trove ingest`"
            )
        with self._load_lock:
            previous = {v.entry: v for v in self._snapshot.views} if self._snapshot else {}
            segments: dict[str, Segment] = {}
            views = []
            for entry in manifest.segments:
                view = previous.get(entry)
                if view is None:
                    seg = self._segments.get(entry.id) or Segment(
                        self.root / SEGMENTS / entry.id, entry.id
                    )
                    if seg.rows != entry.rows or seg.analyzer != manifest.analyzer:
                        raise IndexCorruptError(f"segment {entry.id} disagrees with {manifest}")
                    view = SegmentView.load(self.root, seg, entry)
                segments[entry.id] = view.segment
                views.append(view)
            self._segments = segments
        return Snapshot(self.root, manifest, views)

    # ------------------------------------------------------------------ searching

    def search_lexical(
        self, query: str, principal: Principal, k: int, filters: SearchFilters = NO_FILTERS
    ) -> list[ScoredId]:
        """BM25 top-k among the chunks ``principal`` may read, best first.

        Only chunks containing at least one query term are returned (possibly
        fewer than ``k``); a query of stop words only returns nothing.
        """
        _check_search_args(principal, k, filters)
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        snap = self._snap()
        terms = self.analyzer.analyze(query)
        if not terms or not snap.views:
            return []
        return lexical_top_k(snap, terms, snap.masks(principal, filters), k, self.bm25)

    def search_dense(
        self, vector: np.ndarray, principal: Principal, k: int, filters: SearchFilters = NO_FILTERS
    ) -> list[ScoredId]:
        """Exact cosine top-k among the chunks ``principal`` may read, best first."""
        _check_search_args(principal, k, filters)
        snap = self._snap()
        dims = snap.manifest.dimensions
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if dims and query.shape[0] != dims:
            raise ValueError(f"query vector has {query.shape[0]} dimensions, the index {dims}")
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"query vector must be finite and non-zero (norm {norm})")
        if not snap.views:
            return []
        return dense_top_k(
            snap, query / norm, snap.masks(principal, filters), k, dense_kernel=self.dense_kernel
        )

    # ------------------------------------------------------------------ reading records

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        snap = self._snap()
        found: list[tuple[int, int]] = []  # (view, row) of each id found, in order
        for chunk_id in chunk_ids:
            for v in range(len(snap.views) - 1, -1, -1):
                view = snap.views[v]
                rows = [r for r in view.segment.find_row(chunk_id) if view.live[r]]
                if rows:
                    found.append((v, rows[0]))
                    break
        records: dict[tuple[int, int], ChunkRecord] = {}
        for v in dict.fromkeys(v for v, _ in found):
            view = snap.views[v]
            rows = [row for w, row in found if w == v]
            read = view.segment.records(rows, [_acl_of(view, row) for row in rows])
            records.update(((v, row), record) for row, record in zip(rows, read, strict=True))
        return [records[key] for key in found]

    def document_chunks(self, doc_id: str) -> list[ChunkRecord]:
        snap = self._snap()
        for view in snap.views:
            rows = [r for r in view.segment.doc_rows(doc_id) if view.live[r]]
            if rows:
                records = view.segment.records(rows, [_acl_of(view, r) for r in rows])
                return sorted(records, key=lambda r: r.ord)
        return []

    def doc_ids(self) -> set[str]:
        return set(self._snap().doc_ids())

    def all_acls(self) -> Mapping[str, Acl]:
        out: dict[str, Acl] = {}
        for view in self._snap().views:
            for row in np.flatnonzero(view.live):
                out[view.segment.chunk_id(int(row))] = _acl_of(view, int(row))
        return out

    def document_states(self, source: str) -> dict[str, DocumentState]:
        """doc_id -> live chunks, version and ACL fingerprint, for every document of ``source``."""
        out: dict[str, DocumentState] = {}
        for view in self._snap().views:
            for doc_id, state in document_states_of(view, source):
                out[doc_id] = out[doc_id].merged(state) if doc_id in out else state
        return out

    def stats(self) -> IndexStats:
        snap = self._snap()
        size = sum(v.segment.size_bytes() for v in snap.views)
        return IndexStats(
            chunks=snap.live_count,
            documents=len(snap.doc_ids()),
            dimensions=snap.manifest.dimensions,
            generation=snap.generation,
            size_bytes=size,
        )

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """One writer at a time, across threads (lock) and processes (flock)."""
        with self._write_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / LOCK, "a+b") as lock_file:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def apply(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically and durably (deletes, then upserts, then ACL updates).

        :raises ValueError: an upsert without a vector, with the wrong dimensions, a
            chunk id repeated in the batch or already used by another live document.
        """
        if not isinstance(batch, WriteBatch):
            raise TypeError(f"apply takes a WriteBatch, got {type(batch).__name__}")
        self._snap()
        if batch.empty:
            return
        with self._writer():
            # Build on the newest commit, which another process may have made.
            if read_current(self.root) != self._snap().generation:
                self._snapshot = self._load_latest()
            snap = self._snap()
            dims = self._check_upserts(snap, batch)
            generation = snap.generation + 1
            entries, states = self._carry_forward(snap, batch, generation)
            upserts = sorted(
                (
                    dataclasses.replace(r, acl=batch.acl_updates[r.doc_id])
                    if r.doc_id in batch.acl_updates
                    else r
                    for r in batch.upserts
                ),
                key=lambda r: (r.doc_id, r.ord, r.chunk_id),
            )
            if upserts:
                data = build_from_records(upserts, self.analyzer.analyze, dims)
                entries.append(self._write_new_segment(data, generation))
            entries = self._merge_if_needed(entries, states, generation)
            # An index made before generation ids gets its id now.
            index_id = snap.manifest.index_id or IndexGeneration.first().index_id
            manifest = Manifest(
                generation,
                dims,
                self.analyzer.name,
                tuple(entries),
                index_id=index_id,
                commit=new_generation_token(),
            )
            write_manifest(self.root, manifest)
            write_current(self.root, generation)
            self._snapshot = self._load_latest()
            self._collect_garbage()

    def _check_upserts(self, snap: Snapshot, batch: WriteBatch) -> int:
        dims = validate_upserts(
            batch.upserts, snap.manifest.dimensions or self._expected_dimensions
        )
        replaced = set(batch.delete_docs) | {r.doc_id for r in batch.upserts}
        for r in batch.upserts:
            for view in snap.views:
                for row in view.segment.find_row(r.chunk_id):
                    owner = view.segment.doc_ids[int(view.segment.row_doc[row])]
                    if view.live[row] and owner not in replaced:
                        raise InvalidBatchError(
                            f"chunk id {r.chunk_id!r} (document {r.doc_id!r}) is already used "
                            f"by document {owner!r}"
                        )
        return dims

    def _carry_forward(
        self, snap: Snapshot, batch: WriteBatch, generation: int
    ) -> tuple[list[SegmentEntry], dict[str, tuple[Segment, np.ndarray, AclTable]]]:
        """Tombstones and ACL updates applied to the existing segments, as new side files."""
        removed = set(batch.delete_docs) | {r.doc_id for r in batch.upserts}
        entries: list[SegmentEntry] = []
        states: dict[str, tuple[Segment, np.ndarray, AclTable]] = {}
        for view in snap.views:
            seg, entry = view.segment, view.entry
            live, acl = view.live, view.acl
            doomed = [seg.doc_rows(d) for d in removed if d in seg.doc_index]
            if doomed:
                live = live.copy()
                for rows in doomed:
                    live[rows.start : rows.stop] = False
            for doc_id, new_acl in batch.acl_updates.items():
                rows = seg.doc_rows(doc_id)
                if len(rows) and live[rows.start : rows.stop].any():
                    acl = acl.with_updates(np.arange(rows.start, rows.stop), new_acl)
            live_count = int(live.sum())
            if live_count == 0:
                continue  # every row deleted: the segment leaves the manifest
            deleted_file, acl_file = entry.deleted, entry.acl
            if live_count != view.live_count:
                deleted_file = f"{SIDE}/{seg.id}.del-{generation:010d}.npy"
                save_npy(self.root / deleted_file, ~live)
            if acl is not view.acl:
                acl_file = f"{SIDE}/{seg.id}.acl-{generation:010d}"
                acl.save(self.root / f"{acl_file}.json", self.root / f"{acl_file}.npy")
            entries.append(
                dataclasses.replace(entry, live=live_count, deleted=deleted_file, acl=acl_file)
            )
            states[seg.id] = (seg, live, acl)
        fsync_dir(self.root / SIDE)
        return entries, states

    def _write_new_segment(self, data, generation: int) -> SegmentEntry:
        segment_id = f"{generation:010d}-{secrets.token_hex(4)}"
        write_segment(self.root / SEGMENTS / segment_id, data, analyzer=self.analyzer.name)
        fsync_dir(self.root / SEGMENTS)
        return SegmentEntry(id=segment_id, rows=data.rows, live=data.rows)

    def _merge_if_needed(
        self,
        entries: list[SegmentEntry],
        states: dict[str, tuple[Segment, np.ndarray, AclTable]],
        generation: int,
    ) -> list[SegmentEntry]:
        # The segment written by this batch is not opened yet; it merges in a later commit.
        chosen = [i for i in plan_merge([e for e in entries if e.id in states]) if i in states]
        if not chosen:
            return entries
        data = merge_segments([states[i] for i in chosen])
        merged = self._write_new_segment(data, generation)
        first = min(i for i, e in enumerate(entries) if e.id in chosen)
        kept = [e for e in entries if e.id not in chosen]
        # Keep segment order by age: the merged one takes the place of its oldest part.
        kept.insert(first, merged)
        return kept

    def _collect_garbage(self) -> None:
        """Remove files of generations older than the last ``KEEP_GENERATIONS``."""
        current = self._snap().generation
        keep_manifests: set[str] = set()
        keep_segments: set[str] = set()
        keep_side: set[str] = set()
        for generation in range(current, max(-1, current - KEEP_GENERATIONS), -1):
            try:
                manifest = read_manifest(self.root, generation)
            except FileNotFoundError:
                continue
            keep_manifests.add(manifest_name(generation))
            for e in manifest.segments:
                keep_segments.add(e.id)
                if e.deleted:
                    keep_side.add(Path(e.deleted).name)
                if e.acl:
                    keep_side.update({Path(e.acl).name + ".json", Path(e.acl).name + ".npy"})
        for path in self.root.glob("manifest-*.json"):
            if path.name not in keep_manifests:
                path.unlink()
        for path in (self.root / SEGMENTS).iterdir():
            if path.name not in keep_segments:
                shutil.rmtree(path)
        for path in (self.root / SIDE).iterdir():
            if path.name not in keep_side:
                path.unlink()
        for path in self.root.glob(".*.tmp"):
            path.unlink()


def _acl_of(view: SegmentView, row: int) -> Acl:
    return view.acl.acls[int(view.acl.codes[row])]


def _check_search_args(principal: Principal, k: int, filters: SearchFilters) -> None:
    if not isinstance(principal, Principal):
        raise TypeError(f"a search needs a Principal, got {type(principal).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not isinstance(filters, SearchFilters):
        raise TypeError(f"filters must be SearchFilters, got {type(filters).__name__}")
