"""Immutable segments: the rows written by one batch (or one merge), as plain files.

A segment directory holds, for ``n`` rows grouped by document (rows of a
document are contiguous, in chunk order):

* ``vectors.npy``            float32 (n, dim), unit length, memory-mapped
* ``q8_codes.npy``, ``q8_scale.npy``, ``q8_residual.npy`` — an int8 copy of the
  vectors (per-row scale, residual norm) for the dense first pass (see
  quantized.py); optional: segments written without them get one in memory
* ``tf_indptr.npy``, ``tf_rows.npy``, ``tf_vals.npy`` — term frequencies in CSC
  layout (by term), so a query reads only its own terms' postings
* ``vocab.json``             the segment's terms, in column order
* ``doc_len.npy``            int32 analysed length of each row
* ``ids.bin`` + ``ids_off.npy``   chunk ids; ``id_hash.npy`` + ``id_rows.npy``
  a sorted 64-bit hash of each id for lookups without loading every id
* ``meta.bin`` + ``meta_off.npy`` one JSON object per row (citation metadata, text)
* ``docs.json`` (doc ids, paths) + ``doc_start.npy`` (row ranges)
* ``source.npy``, ``doc_type.npy`` (codes into ``header.json``), ``modified.npy``
  (float64 POSIX seconds, NaN when unknown) — the filter columns
* ``acl.json`` + ``acl.npy``  the ACLs the rows were written with

Nothing in a segment changes after it is written; deletes and ACL changes live
in per-generation side files named by the manifest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.acl import Acl
from retrieval.index.base import ChunkRecord, IndexCorruptError
from retrieval.index.embedded.acl_table import AclTable
from retrieval.index.embedded.files import (
    Blob,
    RowReader,
    fsync_dir,
    load_npy,
    read_json,
    save_npy,
    write_blob,
    write_json,
)
from retrieval.index.embedded.quantized import KIND as QUANTIZED_KIND
from retrieval.index.embedded.quantized import QuantizedVectors, quantize

SEGMENT_FORMAT = 1


def id_hash(chunk_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(chunk_id.encode(), digest_size=8).digest(), "little")


def to_epoch(value: datetime | None) -> float:
    if value is None:
        return float("nan")
    if value.tzinfo is None:  # naive datetimes are taken as UTC, everywhere in the index
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _meta_json(r: ChunkRecord) -> bytes:
    return json.dumps(
        {
            "chunk_id": r.chunk_id,
            "doc_id": r.doc_id,
            "source": r.source,
            "ord": r.ord,
            "text": r.text,
            "title": r.title,
            "uri": r.uri,
            "path": r.path,
            "section": list(r.section),
            "pages": list(r.pages),
            "char_start": r.char_start,
            "char_end": r.char_end,
            "doc_version": r.doc_version,
            "doc_type": r.doc_type,
            "modified_at": r.modified_at.isoformat() if r.modified_at else None,
            "metadata": dict(r.metadata) if r.metadata else None,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def record_from_meta(raw: bytes, acl: Acl) -> ChunkRecord:
    return ChunkRecord.from_fields(json.loads(raw), acl)


@dataclass
class SegmentData:
    """A segment in memory, columnar, before it is written."""

    vectors: np.ndarray  # (n, dim) float32, unit length
    vocab: list[str]
    tf_indptr: np.ndarray
    tf_rows: np.ndarray
    tf_vals: np.ndarray
    doc_len: np.ndarray
    ids: list[bytes]
    meta: list[bytes]
    doc_ids: list[str]
    doc_paths: list[str]
    doc_start: np.ndarray
    sources: list[str]
    source_codes: np.ndarray
    doc_types: list[str]
    doc_type_codes: np.ndarray
    modified: np.ndarray
    acl: AclTable

    @property
    def rows(self) -> int:
        return len(self.ids)


def _csc(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_cols: int):
    order = np.lexsort((rows, cols))
    indptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n_cols), out=indptr[1:])
    return indptr, rows[order].astype(np.int32), vals[order].astype(np.float32)


def _codes(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    table: dict[str, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int32, len(values))
    return list(table), codes


def _doc_table(row_doc_ids: Sequence[str], row_paths: Sequence[str]):
    doc_ids: list[str] = []
    paths: list[str] = []
    starts: list[int] = []
    for i, doc in enumerate(row_doc_ids):
        if not doc_ids or doc_ids[-1] != doc:
            doc_ids.append(doc)
            paths.append(row_paths[i])
            starts.append(i)
    starts.append(len(row_doc_ids))
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("internal error: a segment's rows must be grouped by document")
    return doc_ids, paths, np.asarray(starts, dtype=np.int64)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def build_from_records(
    records: Sequence[ChunkRecord], analyze: Callable[[str], list[str]], dim: int
) -> SegmentData:
    """Rows from upserted records (already validated, sorted by document then ``ord``)."""
    n = len(records)
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[int] = []
    doc_len = np.zeros(n, dtype=np.int32)
    for i, r in enumerate(records):
        terms = analyze(r.text)
        doc_len[i] = len(terms)
        for term, tf in Counter(terms).items():
            rows.append(i)
            cols.append(vocab.setdefault(term, len(vocab)))
            vals.append(tf)
    indptr, tf_rows, tf_vals = _csc(
        np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(vals, dtype=np.float32),
        len(vocab),
    )
    vectors = (
        normalise_rows(np.stack([np.asarray(r.vector, dtype=np.float32) for r in records]))
        if n
        else np.zeros((0, dim), dtype=np.float32)
    )
    doc_ids, doc_paths, doc_start = _doc_table(
        [r.doc_id for r in records], [r.path for r in records]
    )
    sources, source_codes = _codes([r.source for r in records])
    doc_types, doc_type_codes = _codes([r.doc_type for r in records])
    return SegmentData(
        vectors=vectors,
        vocab=list(vocab),
        tf_indptr=indptr,
        tf_rows=tf_rows,
        tf_vals=tf_vals,
        doc_len=doc_len,
        ids=[r.chunk_id.encode() for r in records],
        meta=[_meta_json(r) for r in records],
        doc_ids=doc_ids,
        doc_paths=doc_paths,
        doc_start=doc_start,
        sources=sources,
        source_codes=source_codes,
        doc_types=doc_types,
        doc_type_codes=doc_type_codes,
        modified=np.array([to_epoch(r.modified_at) for r in records], dtype=np.float64),
        acl=AclTable.build([r.acl for r in records]),
    )


def write_segment(directory: Path, data: SegmentData, *, analyzer: str) -> None:
    directory.mkdir(parents=True, exist_ok=False)
    save_npy(directory / "vectors.npy", data.vectors.astype(np.float32))
    codes, scale, residual = quantize(data.vectors)
    save_npy(directory / "q8_codes.npy", codes)
    save_npy(directory / "q8_scale.npy", scale)
    save_npy(directory / "q8_residual.npy", residual)
    save_npy(directory / "tf_indptr.npy", data.tf_indptr.astype(np.int64))
    save_npy(directory / "tf_rows.npy", data.tf_rows.astype(np.int32))
    save_npy(directory / "tf_vals.npy", data.tf_vals.astype(np.float32))
    write_json(directory / "vocab.json", data.vocab)
    save_npy(directory / "doc_len.npy", data.doc_len.astype(np.int32))
    write_blob(directory / "ids.bin", directory / "ids_off.npy", data.ids)
    hashes = np.fromiter((id_hash(i.decode()) for i in data.ids), np.uint64, data.rows)
    order = np.argsort(hashes, kind="stable")
    save_npy(directory / "id_hash.npy", hashes[order])
    save_npy(directory / "id_rows.npy", order.astype(np.int32))
    write_blob(directory / "meta.bin", directory / "meta_off.npy", data.meta)
    write_json(directory / "docs.json", {"doc_ids": data.doc_ids, "paths": data.doc_paths})
    save_npy(directory / "doc_start.npy", data.doc_start.astype(np.int64))
    save_npy(directory / "source.npy", data.source_codes.astype(np.int32))
    save_npy(directory / "doc_type.npy", data.doc_type_codes.astype(np.int32))
    save_npy(directory / "modified.npy", data.modified.astype(np.float64))
    data.acl.save(directory / "acl.json", directory / "acl.npy")
    # The header goes last: a segment directory without one was never finished.
    write_json(
        directory / "header.json",
        {
            "format": SEGMENT_FORMAT,
            "rows": data.rows,
            "dimensions": int(data.vectors.shape[1]),
            "analyzer": analyzer,
            "sources": data.sources,
            "doc_types": data.doc_types,
            "quantized": QUANTIZED_KIND,
        },
    )
    fsync_dir(directory)


class Segment:
    """A written segment, opened read-only (arrays memory-mapped)."""

    def __init__(self, directory: Path, segment_id: str):
        self.id = segment_id
        self.directory = directory
        try:
            header = read_json(directory / "header.json")
            if header.get("format") != SEGMENT_FORMAT:
                raise IndexCorruptError(f"{directory}: unsupported segment format {header}")
            self.rows: int = int(header["rows"])
            self.dimensions: int = int(header["dimensions"])
            self.analyzer: str = header["analyzer"]
            self.sources: list[str] = header["sources"]
            self.doc_types: list[str] = header["doc_types"]
            self._quantized_kind: str | None = header.get("quantized")
            self.vectors = load_npy(directory / "vectors.npy")
            self.vector_rows = RowReader(directory / "vectors.npy")
            self.tf_indptr = load_npy(directory / "tf_indptr.npy")
            self.tf_rows = load_npy(directory / "tf_rows.npy")
            self.tf_vals = load_npy(directory / "tf_vals.npy")
            vocab = read_json(directory / "vocab.json")
            self.vocab: dict[str, int] = {t: i for i, t in enumerate(vocab)}
            self.doc_len = np.asarray(load_npy(directory / "doc_len.npy"))
            self.ids = Blob(directory / "ids.bin", directory / "ids_off.npy", mapped=True)
            self.id_hash = load_npy(directory / "id_hash.npy")
            self.id_rows = load_npy(directory / "id_rows.npy")
            self.meta = Blob(directory / "meta.bin", directory / "meta_off.npy")
            docs = read_json(directory / "docs.json")
            self.doc_ids: list[str] = docs["doc_ids"]
            self.doc_paths: list[str] = docs["paths"]
            self.doc_start = np.asarray(load_npy(directory / "doc_start.npy"))
            self.source_codes = load_npy(directory / "source.npy")
            self.doc_type_codes = load_npy(directory / "doc_type.npy")
            self.modified = load_npy(directory / "modified.npy")
            self.base_acl = AclTable.load(directory / "acl.json", directory / "acl.npy")
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"segment {directory} is incomplete: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise IndexCorruptError(f"segment {directory} has a malformed header: {exc}") from exc
        self._check()
        self._size_bytes = sum(p.stat().st_size for p in directory.iterdir())
        self.doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        self.row_doc = np.repeat(
            np.arange(len(self.doc_ids), dtype=np.int32), np.diff(self.doc_start)
        )
        self._quantized: QuantizedVectors | None = None
        self._quantized_lock = threading.Lock()

    def quantized(self) -> QuantizedVectors:
        """The int8 copy of the vectors: memory-mapped, or built in memory for old segments."""
        if self._quantized is None:
            with self._quantized_lock:
                if self._quantized is None:
                    self._quantized = self._load_quantized()
        return self._quantized

    def _load_quantized(self) -> QuantizedVectors:
        d = self.directory
        if self._quantized_kind == QUANTIZED_KIND:
            try:
                qv = QuantizedVectors(
                    load_npy(d / "q8_codes.npy"),
                    load_npy(d / "q8_scale.npy"),
                    load_npy(d / "q8_residual.npy"),
                )
            except FileNotFoundError as exc:
                raise IndexCorruptError(f"segment {d} is incomplete: {exc}") from exc
            if (
                qv.codes.shape != self.vectors.shape
                or len(qv.scale) != self.rows
                or len(qv.residual) != self.rows
            ):
                raise IndexCorruptError(f"segment {d}: the int8 vectors disagree with vectors.npy")
            return qv
        return QuantizedVectors(*quantize(np.asarray(self.vectors)))

    def _check(self) -> None:
        n = self.rows
        problems = [
            name
            for name, got in (
                ("vectors", self.vectors.shape[0]),
                ("doc_len", len(self.doc_len)),
                ("ids", len(self.ids)),
                ("meta", len(self.meta)),
                ("id_hash", len(self.id_hash)),
                ("source", len(self.source_codes)),
                ("doc_type", len(self.doc_type_codes)),
                ("modified", len(self.modified)),
                ("acl", len(self.base_acl.codes)),
            )
            if got != n
        ]
        if len(self.tf_indptr) != len(self.vocab) + 1 or int(self.tf_indptr[-1]) != len(
            self.tf_rows
        ):
            problems.append("tf matrix")
        if len(self.doc_start) != len(self.doc_ids) + 1 or int(self.doc_start[-1]) != n:
            problems.append("doc table")
        if problems:
            raise IndexCorruptError(
                f"segment {self.directory} is inconsistent ({', '.join(problems)} "
                f"disagree with {n} rows)"
            )

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        col = self.vocab.get(term)
        if col is None:
            return None
        lo, hi = int(self.tf_indptr[col]), int(self.tf_indptr[col + 1])
        return np.asarray(self.tf_rows[lo:hi]), np.asarray(self.tf_vals[lo:hi])

    def doc_rows(self, doc_id: str) -> range:
        i = self.doc_index.get(doc_id)
        if i is None:
            return range(0)
        return range(int(self.doc_start[i]), int(self.doc_start[i + 1]))

    def find_row(self, chunk_id: str) -> list[int]:
        """Rows holding ``chunk_id`` (hash lookup, verified against the stored id)."""
        h = np.uint64(id_hash(chunk_id))
        lo = int(np.searchsorted(self.id_hash, h, side="left"))
        hi = int(np.searchsorted(self.id_hash, h, side="right"))
        rows = (int(r) for r in self.id_rows[lo:hi])
        return [r for r in rows if self.ids.get_str(r) == chunk_id]

    def chunk_id(self, row: int) -> str:
        return self.ids.get_str(row)

    def chunk_ids(self, rows: np.ndarray) -> list[str]:
        return self.ids.get_strs(rows)

    def records(self, rows: Sequence[int], acls: Sequence[Acl]) -> list[ChunkRecord]:
        """The records of ``rows`` (with their ``acls``), read from disk together."""
        return [
            record_from_meta(raw, acl)
            for raw, acl in zip(self.meta.get_many(rows), acls, strict=True)
        ]

    def size_bytes(self) -> int:
        return self._size_bytes


def merge_segments(parts: Sequence[tuple[Segment, np.ndarray, AclTable]]) -> SegmentData:
    """One segment from the live rows of several (each given with its live mask and ACLs).

    Live rows of one document all sit in one segment (an upsert tombstones the
    older ones), so concatenating segments keeps rows grouped by document.
    """
    vocab: dict[str, int] = {}
    rows_out: list[np.ndarray] = []
    cols_out: list[np.ndarray] = []
    vals_out: list[np.ndarray] = []
    vectors, doc_len, modified = [], [], []
    ids: list[bytes] = []
    meta: list[bytes] = []
    row_docs: list[str] = []
    row_paths: list[str] = []
    sources: list[str] = []
    doc_types: list[str] = []
    row_acls: list[Acl] = []
    offset = 0
    for seg, live, acl in parts:
        keep = np.flatnonzero(live)
        new_row = np.full(seg.rows, -1, dtype=np.int64)
        new_row[keep] = np.arange(len(keep)) + offset
        n_terms = len(seg.tf_indptr) - 1
        term_of = np.repeat(np.arange(n_terms), np.diff(seg.tf_indptr))
        r = new_row[np.asarray(seg.tf_rows)]
        alive = r >= 0
        terms = list(seg.vocab)
        used = np.unique(term_of[alive])
        remap = np.zeros(n_terms, dtype=np.int64)
        for t in used:
            remap[t] = vocab.setdefault(terms[t], len(vocab))
        rows_out.append(r[alive])
        cols_out.append(remap[term_of[alive]])
        vals_out.append(np.asarray(seg.tf_vals)[alive])
        vectors.append(np.asarray(seg.vectors)[keep])
        doc_len.append(seg.doc_len[keep])
        modified.append(np.asarray(seg.modified)[keep])
        for row in keep.tolist():
            ids.append(seg.ids.get(row))
            meta.append(seg.meta.get(row))
            d = int(seg.row_doc[row])
            row_docs.append(seg.doc_ids[d])
            row_paths.append(seg.doc_paths[d])
            sources.append(seg.sources[int(seg.source_codes[row])])
            doc_types.append(seg.doc_types[int(seg.doc_type_codes[row])])
            row_acls.append(acl.acls[int(acl.codes[row])])
        offset += len(keep)
    indptr, tf_rows, tf_vals = _csc(
        np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out), len(vocab)
    )
    doc_ids, doc_paths, doc_start = _doc_table(row_docs, row_paths)
    source_names, source_codes = _codes(sources)
    type_names, type_codes = _codes(doc_types)
    return SegmentData(
        vectors=np.concatenate(vectors),
        vocab=list(vocab),
        tf_indptr=indptr,
        tf_rows=tf_rows,
        tf_vals=tf_vals,
        doc_len=np.concatenate(doc_len),
        ids=ids,
        meta=meta,
        doc_ids=doc_ids,
        doc_paths=doc_paths,
        doc_start=doc_start,
        sources=source_names,
        source_codes=source_codes,
        doc_types=type_names,
        doc_type_codes=type_codes,
        modified=np.concatenate(modified),
        acl=AclTable.build(row_acls),
    )
