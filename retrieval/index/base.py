"""The index contract every backend implements, with one semantics.

* **Permission filter inside the query.** ``search_lexical`` and
  ``search_dense`` take a :class:`~core.acl.Principal` and return the top-k
  among the chunks that principal may read (``Acl.permits``), never a
  post-filtered top-k. There is no search without a principal.
* **Atomic batches.** :meth:`IndexBackend.apply` applies a :class:`WriteBatch`
  (deletes, then upserts, then ACL updates) all at once: a reader sees the
  index before or after the batch, never in between; a crash mid-write leaves
  the previous committed state. (OpenSearch has no multi-document transactions:
  there every step is idempotent, a re-synced document is never absent in
  between, and the manifest — committed after ``apply`` — makes the next run
  repair an interrupted batch; see docs/opensearch.md.)
* **Upsert by document.** Upserting chunks of a document replaces *all* that
  document's previous chunks (no stale or duplicate chunks after a re-sync).
* **Fail closed.** A chunk whose ACL grants nobody is stored but never returned.
* **Generations.** Every commit is named by an :class:`IndexGeneration`: a
  random id made when the index was created, a commit sequence, and a random
  id per commit. The pipeline records the one it committed to; a different one
  later (a new, foreign or restored index) makes it compare the index with its
  manifest document by document (:meth:`IndexBackend.document_states`) and
  rewrite what is missing (see docs/freshness.md, "A lost or replaced index").
* **Filters** (:class:`~retrieval.models.SearchFilters`) only narrow: an empty
  ``sources`` / ``doc_types`` set means no filter; ``path_prefixes`` match the
  start of the relative path; ``modified_after`` is inclusive and
  ``modified_before`` exclusive; a chunk without ``modified_at`` never passes a
  time filter; naive datetimes are UTC.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.acl import Acl, Principal

# The contract's errors, importable from the contract (``X as X`` marks a re-export).
from retrieval.index.errors import IndexBackendError as IndexBackendError
from retrieval.index.errors import IndexCorruptError as IndexCorruptError
from retrieval.index.errors import IndexNotFoundError as IndexNotFoundError
from retrieval.index.errors import InvalidBatchError
from retrieval.models import NO_FILTERS, ScoredId, SearchFilters


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as stored in the index: text, metadata for citations, ACL, vector."""

    chunk_id: str
    doc_id: str
    source: str
    ord: int
    text: str
    title: str
    uri: str
    path: str
    section: tuple[str, ...]
    pages: tuple[int, ...]
    char_start: int
    char_end: int
    doc_version: str
    doc_type: str
    modified_at: datetime | None
    acl: Acl
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Open-ended chunk annotations, e.g. {"risk": [{"type": "prompt_injection",
    # "score": 0.93}]}; returned with search results.
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_fields(cls, d: Mapping[str, Any], acl: Acl) -> ChunkRecord:
        """A record (without vector) from its JSON fields, as the embedded index's
        segments and the staging store's copies of indexed chunks keep them."""
        return cls(
            chunk_id=d["chunk_id"],
            doc_id=d["doc_id"],
            source=d["source"],
            ord=d["ord"],
            text=d["text"],
            title=d["title"],
            uri=d["uri"],
            path=d["path"],
            section=tuple(d["section"]),
            pages=tuple(d["pages"]),
            char_start=d["char_start"],
            char_end=d["char_end"],
            doc_version=d["doc_version"],
            doc_type=d["doc_type"],
            modified_at=datetime.fromisoformat(d["modified_at"]) if d["modified_at"] else None,
            acl=acl,
            metadata=d.get("metadata") or {},
        )


@dataclass
class WriteBatch:
    """Changes applied atomically by :meth:`IndexBackend.apply`.

    Order of application: ``delete_docs``, then ``upserts`` (grouped by
    ``doc_id``; each group replaces every earlier chunk of that document), then
    ``acl_updates`` (new ACL for every chunk of a document, nothing re-embedded).
    A document both deleted and upserted in one batch is therefore present.
    An invalid batch (a missing or wrong-size vector, a chunk id repeated or
    owned by another live document) raises :class:`InvalidBatchError` and
    changes nothing.
    """

    delete_docs: set[str] = field(default_factory=set)
    upserts: list[ChunkRecord] = field(default_factory=list)
    acl_updates: dict[str, Acl] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.delete_docs or self.upserts or self.acl_updates)


@dataclass(frozen=True)
class IndexStats:
    chunks: int
    documents: int
    dimensions: int
    generation: int
    size_bytes: int


@dataclass(frozen=True)
class IndexGeneration:
    """Which index, and which commit of it: what a reader sees now.

    ``index_id`` is random, made when the index is created, so a new or foreign
    index never shares it; ``sequence`` counts commits; ``commit`` is random per
    commit, so two copies of one index that diverged (an older copy restored and
    written to since) never look the same even at the same sequence.
    """

    index_id: str
    sequence: int
    commit: str

    @classmethod
    def first(cls) -> IndexGeneration:
        """The generation of a newly created, empty index."""
        return cls(new_generation_token(), 0, new_generation_token())

    def next(self) -> IndexGeneration:
        """The generation of the commit that follows this one."""
        return IndexGeneration(self.index_id, self.sequence + 1, new_generation_token())

    def to_dict(self) -> dict[str, Any]:
        return {"index_id": self.index_id, "sequence": self.sequence, "commit": self.commit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> IndexGeneration | None:
        """The generation in ``data``; None when absent or malformed (an unknown index)."""
        if not isinstance(data, Mapping):
            return None
        index_id, sequence, commit = data.get("index_id"), data.get("sequence"), data.get("commit")
        if not (isinstance(index_id, str) and index_id and isinstance(commit, str) and commit):
            return None
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            return None
        return cls(index_id, sequence, commit)

    def __str__(self) -> str:
        return f"{self.index_id}#{self.sequence}"


def new_generation_token() -> str:
    return secrets.token_hex(8)


# The version or ACL fingerprint of a document whose chunks disagree (a batch
# half-applied in OpenSearch): never equal to a real one.
MIXED = "<mixed>"


@dataclass(frozen=True)
class DocumentState:
    """What the index holds of one document: live chunks, their version and ACL fingerprint."""

    chunks: int
    version: str
    acl_fingerprint: str

    def merged(self, other: DocumentState) -> DocumentState:
        """This document's state with more of its chunks (found elsewhere in the index)."""
        return DocumentState(
            self.chunks + other.chunks,
            self.version if self.version == other.version else MIXED,
            self.acl_fingerprint if self.acl_fingerprint == other.acl_fingerprint else MIXED,
        )


@runtime_checkable
class IndexBackend(Protocol):
    def apply(self, batch: WriteBatch) -> None:
        """Apply the batch atomically and durably."""

    def search_lexical(
        self,
        query: str,
        principal: Principal,
        k: int,
        filters: SearchFilters = NO_FILTERS,
    ) -> list[ScoredId]:
        """BM25 top-k among the chunks ``principal`` may read, best first."""

    def search_dense(
        self,
        vector: np.ndarray,
        principal: Principal,
        k: int,
        filters: SearchFilters = NO_FILTERS,
    ) -> list[ScoredId]:
        """Cosine top-k among the chunks ``principal`` may read, best first."""

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Records (without vectors) for the given ids, in the same order; absent ids skipped.

        Not permission-checked: callers pass only ids returned by a search.
        """

    def document_chunks(self, doc_id: str) -> list[ChunkRecord]:
        """Every chunk of a document in order (for manifests, checks and context)."""

    def doc_ids(self) -> set[str]:
        """Every document id present in the index."""

    def all_acls(self) -> Mapping[str, Acl]:
        """chunk_id -> ACL for every chunk (for audits and asset checks)."""

    def stats(self) -> IndexStats: ...

    def index_generation(self) -> IndexGeneration | None:
        """The committed generation; None when the index has none (nothing written yet, or
        an index this Trove did not create)."""

    def document_states(self, source: str) -> dict[str, DocumentState]:
        """doc_id -> what the index holds of it, for every document of ``source``."""

    def close(self) -> None: ...


def doc_ids_of(records: Iterable[ChunkRecord]) -> set[str]:
    return {r.doc_id for r in records}


def validate_upserts(upserts: Sequence[ChunkRecord], dimensions: int | None) -> int:
    """Check a batch's upserts as every backend must; return the vector dimensions.

    Raises :class:`InvalidBatchError` (nothing written) for a missing id, a chunk id
    repeated in the batch, or a vector that is missing, not 1-D, not finite, all
    zeros (no cosine similarity) or of the wrong size.
    """
    dims = dimensions or 0
    seen: set[str] = set()
    for r in upserts:
        if not isinstance(r, ChunkRecord):
            raise TypeError(f"upserts must be ChunkRecords, got {type(r).__name__}")
        if not r.chunk_id or not r.doc_id:
            raise InvalidBatchError(f"chunk {r.chunk_id!r} needs a chunk_id and a doc_id")
        if r.chunk_id in seen:
            raise InvalidBatchError(f"chunk id {r.chunk_id!r} appears twice in one batch")
        seen.add(r.chunk_id)
        if r.vector is None:
            raise InvalidBatchError(f"chunk {r.chunk_id!r} has no vector; embed before writing")
        vector = np.asarray(r.vector)
        if vector.ndim != 1 or not np.all(np.isfinite(vector)):
            raise InvalidBatchError(f"chunk {r.chunk_id!r}: vector must be 1-D and finite")
        if not np.any(vector):
            raise InvalidBatchError(f"chunk {r.chunk_id!r}: a zero vector has no cosine similarity")
        dims = dims or vector.shape[0]
        if vector.shape[0] != dims:
            raise InvalidBatchError(
                f"chunk {r.chunk_id!r}: vector has {vector.shape[0]} dimensions, the index {dims}"
            )
    return dims
