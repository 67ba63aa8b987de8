"""Does the index hold what a source's manifest says it does?

The index is derived data: the manifest (``pipelines/store.py``) records what
was committed to it, document by document, and the index generation it was
committed against (:class:`~retrieval.index.base.IndexGeneration`). When the
index now has that same generation, nothing has touched it since. Any other
generation — no index at all (the folder deleted, ``index.path`` pointed
elsewhere), a new id (a new or foreign index, an alias moved), a lower
sequence (an older copy restored) or simply later commits by other sources —
makes :func:`check_index` compare the two document by document: chunk count,
version and ACL fingerprint of every document, and documents the index holds
that the manifest does not.

Each ingest runs the check before deciding what is unchanged (documents the
index lacks are rewritten, ones it should not hold are removed); ``trove
status`` and the ``index_matches_manifest`` asset check report a disagreement
as an error whose fix is ``trove ingest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.store import ManifestEntry, StagingStore
from retrieval.index.base import DocumentState, IndexBackend, IndexGeneration

FIX = "trove ingest"  # rewrites what the index lacks, from the state folder or the source
# The index is derived data: `trove ingest` rebuilds a missing one from the state folder.
CORRUPT_INDEX_FIX = "move the index folder aside, then trove ingest (it rebuilds from the state)"


@dataclass(frozen=True)
class IndexCheck:
    """The index against one source's manifest."""

    source: str
    recorded: IndexGeneration | None  # what the manifest was last committed against
    current: IndexGeneration | None  # what the index is now (None: no index, or not ours)
    index_found: bool
    compared: bool  # document by document; False when the generation was the recorded one
    manifest_documents: int
    manifest_chunks: int
    index_documents: int
    index_chunks: int
    missing: tuple[str, ...] = ()  # in the manifest, absent from the index
    stale: tuple[str, ...] = ()  # present, with other chunks, version or ACL than the manifest
    orphaned: tuple[str, ...] = ()  # in the index, not (or not with chunks) in the manifest

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.orphaned)

    @property
    def to_rewrite(self) -> frozenset[str]:
        return frozenset(self.missing) | frozenset(self.stale)

    @property
    def cause(self) -> str:
        """Why the index may differ from the manifest, from the two generations."""
        if not self.index_found:
            return "the index is missing"
        if self.current is None:
            return "the index has no generation id (not made by this Trove, or by an older one)"
        if self.recorded is None:
            return "no index generation was recorded for this source"
        if self.current.index_id != self.recorded.index_id:
            return "the index was replaced by another one"
        if self.current.sequence < self.recorded.sequence:
            return "the index is an older copy"
        if self.current != self.recorded:
            return "the index was written to since"
        return "the index is the generation last committed"

    def describe(self) -> str:
        """One line for summaries, logs and status: what differs, why, and the two generations."""
        was = str(self.recorded) if self.recorded else "unknown"
        now = str(self.current) if self.current else "none"
        if self.recorded is not None and self.current == self.recorded:
            head = f"the index disagrees with the manifest at generation {now}"
        else:
            head = f"index generation changed: was {was}, now {now} ({self.cause})"
        return (
            f"{head}; the manifest lists {self.manifest_chunks} chunks in "
            f"{self.manifest_documents} documents, the index holds {self.index_chunks} in "
            f"{self.index_documents}: "
            f"{len(self.missing)} documents missing, {len(self.stale)} stale, "
            f"{len(self.orphaned)} not in the manifest"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "manifest_generation": str(self.recorded) if self.recorded else None,
            "index_generation": str(self.current) if self.current else None,
            "index_found": self.index_found,
            "compared": self.compared,
            "manifest_documents": self.manifest_documents,
            "manifest_chunks": self.manifest_chunks,
            "index_documents": self.index_documents,
            "index_chunks": self.index_chunks,
            "missing_documents": len(self.missing),
            "stale_documents": len(self.stale),
            "orphaned_documents": len(self.orphaned),
            "examples": sorted([*self.missing, *self.stale, *self.orphaned])[:10],
            "error": None if self.ok else self.describe(),
            "fix": None if self.ok else FIX,
        }


def expected_documents(manifest: dict[str, ManifestEntry]) -> dict[str, ManifestEntry]:
    """The manifest's documents that the index should hold chunks of."""
    return {doc_id: e for doc_id, e in manifest.items() if e.expected_in_index}


def check_index(
    store: StagingStore, index: IndexBackend | None, source: str, *, thorough: bool = False
) -> IndexCheck:
    """Compare ``index`` (None: there is none) with the manifest of ``source``.

    Without ``thorough``, an index at exactly the generation the manifest was
    committed against is taken as agreeing without reading it (nothing wrote to
    it since); ``thorough`` compares every document anyway (status, checks).
    """
    expected = expected_documents(store.manifest())
    recorded = store.index_generation()
    manifest_chunks = sum(len(e.chunk_ids) for e in expected.values())
    current = index.index_generation() if index is not None else None
    if index is not None and not thorough and recorded is not None and current == recorded:
        return IndexCheck(
            source=source,
            recorded=recorded,
            current=current,
            index_found=True,
            compared=False,
            manifest_documents=len(expected),
            manifest_chunks=manifest_chunks,
            index_documents=len(expected),
            index_chunks=manifest_chunks,
        )
    states = index.document_states(source) if index is not None else {}
    missing, stale = [], []
    for doc_id, entry in sorted(expected.items()):
        state = states.get(doc_id)
        if state is None:
            missing.append(doc_id)
        elif not _agrees(state, entry):
            stale.append(doc_id)
    return IndexCheck(
        source=source,
        recorded=recorded,
        current=current,
        index_found=index is not None,
        compared=True,
        manifest_documents=len(expected),
        manifest_chunks=manifest_chunks,
        index_documents=len(states),
        index_chunks=sum(s.chunks for s in states.values()),
        missing=tuple(missing),
        stale=tuple(stale),
        orphaned=tuple(sorted(set(states) - set(expected))),
    )


def _agrees(state: DocumentState, entry: ManifestEntry) -> bool:
    return (
        state.chunks == len(entry.chunk_ids)
        and state.version == entry.version
        and state.acl_fingerprint == entry.acl_fingerprint
    )
