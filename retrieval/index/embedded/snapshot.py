"""One committed generation as a reader sees it: segments, live rows, ACLs, row masks.

A snapshot never changes. Searches take the index's current snapshot once and
use only it, so a concurrent commit (or ``refresh``) can never show a search
half of a batch.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.acl import Principal
from retrieval.index.base import MIXED, DocumentState, IndexCorruptError
from retrieval.index.embedded.acl_table import AclTable
from retrieval.index.embedded.bm25 import idf_okapi_raw, length_norm
from retrieval.index.embedded.files import load_npy
from retrieval.index.embedded.manifest import Manifest, SegmentEntry
from retrieval.index.embedded.segment import Segment, to_epoch
from retrieval.models import SearchFilters

MASK_CACHE_SIZE = 64


@dataclass
class SegmentView:
    """A segment as of one generation: which rows are live and which ACL each row has."""

    segment: Segment
    entry: SegmentEntry
    live: np.ndarray  # bool (rows,)
    acl: AclTable
    live_count: int
    live_length: int  # sum of analysed lengths of live rows, for avgdl

    @classmethod
    def load(cls, root: Path, segment: Segment, entry: SegmentEntry) -> SegmentView:
        if entry.deleted is None:
            live = np.ones(segment.rows, dtype=bool)
        else:
            live = ~np.asarray(load_npy(root / entry.deleted), dtype=bool)
        if entry.acl is None:
            acl = segment.base_acl
        else:
            acl = AclTable.load(root / f"{entry.acl}.json", root / f"{entry.acl}.npy")
        if len(live) != segment.rows or len(acl.codes) != segment.rows:
            raise IndexCorruptError(f"side files of segment {entry.id} do not match its rows")
        live_count = int(live.sum())
        if live_count != entry.live:
            raise IndexCorruptError(
                f"segment {entry.id}: manifest says {entry.live} live rows, tombstones leave "
                f"{live_count}"
            )
        live_length = int(segment.doc_len[live].sum(dtype=np.int64))
        return cls(segment, entry, live, acl, live_count, live_length)


def document_states_of(view: SegmentView, source: str) -> Iterator[tuple[str, DocumentState]]:
    """(doc_id, state) of every document of ``source`` with live rows in this segment view.

    Rows of a document are contiguous and written together, so one record gives
    the document's version; the ACL codes of all its live rows give its ACL
    (:data:`~retrieval.index.base.MIXED` if they disagree).
    """
    seg = view.segment
    if source not in seg.sources:
        return
    code = seg.sources.index(source)
    rows = np.flatnonzero(view.live & (np.asarray(seg.source_codes) == code))
    if not len(rows):
        return
    docs = np.asarray(seg.row_doc)[rows]  # non-decreasing: rows are grouped by document
    starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
    counts = np.diff(np.r_[starts, len(rows)])
    codes = np.asarray(view.acl.codes)[rows]
    same_acl = np.minimum.reduceat(codes, starts) == np.maximum.reduceat(codes, starts)
    fingerprints = [acl.fingerprint() for acl in view.acl.acls]
    first_rows = rows[starts]
    for i, raw in enumerate(seg.meta.get_many([int(r) for r in first_rows])):
        version = json.loads(raw).get("doc_version") or ""
        acl = fingerprints[int(codes[starts[i]])] if same_acl[i] else MIXED
        yield seg.doc_ids[int(docs[starts[i]])], DocumentState(int(counts[i]), version, acl)


def filter_mask(seg: Segment, filters: SearchFilters) -> np.ndarray | None:
    """Rows passing ``filters``; None when the filters are empty.

    ``modified_after`` is inclusive and ``modified_before`` exclusive; a chunk
    with no modification time never passes a time filter (a filter narrows).
    """
    if filters.empty:
        return None
    mask = np.ones(seg.rows, dtype=bool)
    if filters.sources:
        ok = np.array([s in filters.sources for s in seg.sources], dtype=bool)
        mask &= ok[seg.source_codes] if len(ok) else False
    if filters.doc_types:
        ok = np.array([t in filters.doc_types for t in seg.doc_types], dtype=bool)
        mask &= ok[seg.doc_type_codes] if len(ok) else False
    if filters.path_prefixes:
        prefixes = tuple(filters.path_prefixes)
        ok = np.array([p.startswith(prefixes) for p in seg.doc_paths], dtype=bool)
        mask &= ok[seg.row_doc] if len(ok) else False
    if filters.modified_after is not None or filters.modified_before is not None:
        modified = np.asarray(seg.modified)
        known = ~np.isnan(modified)
        mask &= known
        with np.errstate(invalid="ignore"):
            if filters.modified_after is not None:
                mask &= modified >= to_epoch(filters.modified_after)
            if filters.modified_before is not None:
                mask &= modified < to_epoch(filters.modified_before)
    return mask


class Snapshot:
    def __init__(self, root: Path, manifest: Manifest, views: list[SegmentView]):
        self.root = root
        self.manifest = manifest
        self.views = views
        self.generation = manifest.generation
        self.live_count = sum(v.live_count for v in views)
        self.live_length = sum(v.live_length for v in views)
        self._lock = threading.Lock()
        self._masks: OrderedDict[tuple[Principal, SearchFilters], list[np.ndarray]] = OrderedDict()
        self._okapi_average_idf: float | None = None
        self._length_norms: dict[tuple[float, float], list[np.ndarray]] = {}
        self._doc_ids: frozenset[str] | None = None

    @property
    def avgdl(self) -> float:
        return self.live_length / self.live_count if self.live_count else 0.0

    def masks(self, principal: Principal, filters: SearchFilters) -> list[np.ndarray]:
        """Per segment: rows that are live, readable by ``principal`` and pass ``filters``."""
        key = (principal, filters)
        with self._lock:
            cached = self._masks.get(key)
            if cached is not None:
                self._masks.move_to_end(key)
                return cached
        masks = []
        for view in self.views:
            mask = view.acl.permitted_rows(principal) & view.live
            extra = filter_mask(view.segment, filters)
            if extra is not None:
                mask &= extra
            masks.append(mask)
        with self._lock:
            self._masks[key] = masks
            while len(self._masks) > MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        return masks

    def length_norms(self, k1: float, b: float) -> list[np.ndarray]:
        """Per segment, BM25's length normalisation of every row for this generation's avgdl.

        Computed once per generation and parameters (8 bytes a row), so a query's
        per-posting work is a gather and three float operations.
        """
        key = (k1, b)
        norms = self._length_norms.get(key)
        if norms is None:
            avgdl = self.avgdl or 1.0
            norms = [length_norm(v.segment.doc_len, avgdl, k1, b) for v in self.views]
            with self._lock:
                self._length_norms[key] = norms
        return norms

    def doc_ids(self) -> frozenset[str]:
        if self._doc_ids is None:
            docs: set[str] = set()
            for view in self.views:
                seg = view.segment
                if len(seg.doc_ids) == 0:
                    continue
                live_per_doc = np.add.reduceat(view.live.astype(np.int64), seg.doc_start[:-1])
                docs.update(seg.doc_ids[i] for i in np.flatnonzero(live_per_doc))
            self._doc_ids = frozenset(docs)
        return self._doc_ids

    def okapi_average_idf(self) -> float:
        """Mean raw okapi idf over every term with a live occurrence (see ``bm25.py``)."""
        if self._okapi_average_idf is None:
            df: dict[str, int] = {}
            for view in self.views:
                seg = view.segment
                n_terms = len(seg.tf_indptr) - 1
                if n_terms == 0:
                    continue
                live_hits = view.live[np.asarray(seg.tf_rows)].astype(np.int64)
                counts = np.add.reduceat(
                    np.concatenate([live_hits, [0]]), np.asarray(seg.tf_indptr[:-1])
                )
                # reduceat returns the element itself for empty columns: zero those.
                counts[np.diff(seg.tf_indptr) == 0] = 0
                for term, col in seg.vocab.items():
                    c = int(counts[col])
                    if c:
                        df[term] = df.get(term, 0) + c
            if df:
                idf = idf_okapi_raw(self.live_count, np.fromiter(df.values(), np.float64))
                self._okapi_average_idf = float(idf.sum() / len(df))
            else:
                self._okapi_average_idf = 0.0
        return self._okapi_average_idf
