"""Hybrid search: lexical and dense candidates (permission-filtered inside the index), fused,
turned into cited passages.

Example::

    searcher = Searcher(index, embedder, fusion="rrf", candidates=50)
    passages = searcher.search("per diem rates", Principal.of("alice", ["staff"]), k=5)
    print(passages[0].citation.uri, passages[0].citation.section)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from core.acl import Principal
from retrieval.config import RetrievalConfig
from retrieval.fusion import FusionMethod, fuse, fuse_by_document
from retrieval.index.base import ChunkRecord, IndexBackend
from retrieval.models import NO_FILTERS, Citation, Passage, ScoredId, SearchFilters
from retrieval.parallel import Beside, serving

# One set of defaults: the configuration's (chosen by measurement,
# docs/benchmarks.md#retrieval-quality).
_DEFAULTS = RetrievalConfig()
# Fusions a backend's one-request hybrid search (OpenSearch's search pipeline) can
# stand in for: min-max blend (`normalization`) and RRF.
# The server-side combination that ranks as each of Trove's fusions does (OpenSearch's
# `score-ranker-processor` RRF, and its min-max `normalization-processor` with a
# weighted arithmetic mean for blend). z-score has none.
SERVER_SIDE_FUSIONS: dict[FusionMethod, str] = {
    FusionMethod.RRF: "rrf",
    FusionMethod.BLEND: "normalization",
}


@dataclass
class Ranked:
    """Per-retriever ranked candidate lists, kept for evaluation and debugging.

    ``records`` holds the index record of each returned passage, by chunk id, as the
    searcher read it and checked it against the (expanded) principal's ACL: the
    retrieval service builds its results from these instead of reading them again.
    """

    lexical: list[ScoredId] = field(default_factory=list)
    dense: list[ScoredId] = field(default_factory=list)
    records: dict[str, ChunkRecord] = field(default_factory=dict)


class QueryEncoder(Protocol):
    """What the searcher needs from an embedder (``retrieval.embedding.base.Embedder``)."""

    def encode_query(self, text: str) -> np.ndarray: ...


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    LEXICAL = "lexical"
    DENSE = "dense"

    @classmethod
    def from_str(cls, value: str) -> SearchMode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown search mode {value!r} (valid: {valid})") from None


class IdentityExpander(Protocol):
    """Adds a verified caller's source groups (see :class:`retrieval.directory.GroupDirectory`)."""

    def expand(self, principal: Principal) -> Principal: ...


class Searcher:
    """Runs searches against one index as a given principal.

    :param index: any :class:`~retrieval.index.base.IndexBackend`.
    :param embedder: has ``encode_query(text) -> np.ndarray``; only used for dense retrieval.
    :param fusion: ``"rrf"`` or ``"blend"`` (see :mod:`retrieval.fusion`).
    :param rrf_k: the RRF constant.
    :param dense_weight: weight of the dense list in fusion; lexical gets ``1 - dense_weight``.
    :param candidates: how many hits each retriever contributes before fusion (at least ``k``).
    :param document_fusion: fuse per document (:func:`retrieval.fusion.fuse_by_document`):
        documents rank by their best passage in each list, not passages one by one.
    :param max_per_document: at most this many passages of one document in the top ``k`` of
        :meth:`search` (``None``: no cap); lower-ranked passages of other documents move up.
        :meth:`search_ranked` takes its own cap (none by default: the retrieval service
        merges and caps passages itself, after reranking).
    :raises ValueError: an argument is out of range.
    """

    def __init__(
        self,
        index: IndexBackend,
        embedder: QueryEncoder | None,
        *,
        fusion: FusionMethod | str = _DEFAULTS.fusion,
        rrf_k: int = _DEFAULTS.rrf_k,
        dense_weight: float = _DEFAULTS.dense_weight,
        candidates: int = _DEFAULTS.candidates,
        identity: IdentityExpander | None = None,
        max_per_document: int | None = _DEFAULTS.search_max_per_document,
        document_fusion: bool = _DEFAULTS.document_fusion,
    ):
        self.fusion = fusion if isinstance(fusion, FusionMethod) else FusionMethod.from_str(fusion)
        if rrf_k < 1:
            raise ValueError(f"rrf_k must be >= 1, got {rrf_k}")
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be within [0, 1], got {dense_weight}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        _check_cap(max_per_document)
        self.index = index
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.candidates = candidates
        self.identity = identity
        self.max_per_document = max_per_document
        self.document_fusion = document_fusion

    @classmethod
    def from_config(
        cls,
        index: IndexBackend,
        embedder: QueryEncoder | None,
        config: RetrievalConfig,
        identity: IdentityExpander | None = None,
    ) -> Searcher:
        return cls(
            index,
            embedder,
            fusion=config.fusion,
            rrf_k=config.rrf_k,
            dense_weight=config.dense_weight,
            candidates=config.candidates,
            identity=identity,
            max_per_document=config.search_max_per_document,
            document_fusion=config.document_fusion,
        )

    def expand(self, principal: Principal) -> Principal:
        """The principal with its source groups (group directory), as every search uses it."""
        return self.identity.expand(principal) if self.identity is not None else principal

    def search(
        self,
        query: str,
        principal: Principal,
        k: int = 10,
        filters: SearchFilters = NO_FILTERS,
        *,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> list[Passage]:
        """The top-``k`` passages ``principal`` may read, best first, each with its citation.

        At most ``max_per_document`` of them come from one document (see the class).
        """
        return self.search_ranked(
            query, principal, k, filters, mode=mode, max_per_document=self.max_per_document
        )[0]

    def search_lexical_only(
        self, query: str, principal: Principal, k: int = 10, filters: SearchFilters = NO_FILTERS
    ) -> list[Passage]:
        return self.search(query, principal, k, filters, mode=SearchMode.LEXICAL)

    def search_dense_only(
        self, query: str, principal: Principal, k: int = 10, filters: SearchFilters = NO_FILTERS
    ) -> list[Passage]:
        return self.search(query, principal, k, filters, mode=SearchMode.DENSE)

    def search_ranked(
        self,
        query: str,
        principal: Principal,
        k: int = 10,
        filters: SearchFilters = NO_FILTERS,
        *,
        mode: SearchMode | str = SearchMode.HYBRID,
        max_per_document: int | None = None,
    ) -> tuple[list[Passage], Ranked]:
        """Like :meth:`search`, also returning each retriever's candidate list (for evaluation).

        Unlike :meth:`search`, no per-document cap unless ``max_per_document`` is given.
        """
        _check_cap(max_per_document)
        with serving():
            return self._search_ranked(query, principal, k, filters, mode, max_per_document)

    def _search_ranked(
        self,
        query: str,
        principal: Principal,
        k: int,
        filters: SearchFilters,
        mode: SearchMode | str,
        max_per_document: int | None,
    ) -> tuple[list[Passage], Ranked]:
        mode = mode if isinstance(mode, SearchMode) else SearchMode.from_str(mode)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query must be a non-empty string, got {query!r}")
        if not isinstance(principal, Principal):
            raise TypeError(f"a search needs a Principal, got {type(principal).__name__}")
        principal = self.expand(principal)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        n = max(self.candidates, k)
        ranked = Ranked()
        hybrid_in_one_request = getattr(self.index, "search_hybrid", None)
        server_side = getattr(self.index, "hybrid_combination", None)
        if self.document_fusion or SERVER_SIDE_FUSIONS.get(self.fusion) != server_side:
            # The backend would combine the lists differently from `self.fusion`
            # (z-score has no server-side form; an index set up for RRF must not
            # answer a blend search): Trove fuses both lists itself, so one
            # configuration ranks the same way on either backend. So does
            # document-level fusion, which no backend's combination does.
            hybrid_in_one_request = None
        if mode is SearchMode.HYBRID and hybrid_in_one_request is not None:
            # A backend that fuses server-side (OpenSearch's hybrid query) gets one
            # request; the per-retriever lists stay empty in `ranked`.
            if self.embedder is None:
                raise ValueError("hybrid search needs an embedder; none was given")
            hits = hybrid_in_one_request(
                query,
                self.embedder.encode_query(query),
                principal,
                n,
                filters,
                dense_weight=self.dense_weight,
                rrf_k=self.rrf_k,
            )
            return self._passages(hits, principal, k, max_per_document, ranked), ranked
        if mode is SearchMode.LEXICAL:
            ranked.lexical = self.index.search_lexical(query, principal, n, filters)
        elif self.embedder is None:
            raise ValueError(f"search mode {mode.value!r} needs an embedder; none was given")
        elif mode is SearchMode.DENSE:
            ranked.dense = self.index.search_dense(
                self.embedder.encode_query(query), principal, n, filters
            )
        else:
            # The lexical search runs on an idle core while the query is embedded here,
            # the longer of the two; both release the GIL for most of it.
            lexical = Beside(self.index.search_lexical, query, principal, n, filters)
            vector = self.embedder.encode_query(query)
            ranked.lexical = lexical.join()
            ranked.dense = self.index.search_dense(vector, principal, n, filters)
        if mode is SearchMode.LEXICAL:
            hits = ranked.lexical
        elif mode is SearchMode.DENSE:
            hits = ranked.dense
        elif self.document_fusion:
            hits = fuse_by_document(
                self.fusion,
                [ranked.lexical, ranked.dense],
                [1.0 - self.dense_weight, self.dense_weight],
                document_of,
                rrf_k=self.rrf_k,
            )
        else:
            hits = fuse(
                self.fusion,
                [ranked.lexical, ranked.dense],
                [1.0 - self.dense_weight, self.dense_weight],
                rrf_k=self.rrf_k,
            )
        return self._passages(hits, principal, k, max_per_document, ranked), ranked

    def _passages(
        self,
        hits: list[ScoredId],
        principal: Principal,
        k: int,
        max_per_document: int | None,
        ranked: Ranked,
    ) -> list[Passage]:
        # Records are read k at a time (each costs reads from disk): a chunk deleted
        # or re-permissioned between the search and this read (another generation)
        # is dropped, never shown, and the next hits take its place. So is a passage
        # over the per-document cap: the window moves on to other documents.
        out: list[Passage] = []
        per_document: dict[str, int] = {}
        start = 0
        while len(out) < k and start < len(hits):
            window = hits[start : start + k - len(out)]
            start += len(window)
            ids = [h.chunk_id for h in window]
            records = {r.chunk_id: r for r in self.index.get_chunks(ids)}
            for hit in window:
                record = records.get(hit.chunk_id)
                if record is None or not record.acl.permits(principal):
                    continue
                if max_per_document is not None:
                    seen = per_document.get(record.doc_id, 0)
                    if seen >= max_per_document:
                        continue
                    per_document[record.doc_id] = seen + 1
                out.append(passage_from_record(record, hit.score))
                # Kept for the caller (the retrieval service): only records that
                # passed the ACL check above, so nothing unchecked reaches a result.
                ranked.records[record.chunk_id] = record
        return out


def document_of(chunk_id: str) -> str:
    """The document a chunk id names: ids are ``<doc_id>#<ordinal>`` (``chunk_id_for``)."""
    doc_id, hash_sign, _ = chunk_id.rpartition("#")
    return doc_id if hash_sign else chunk_id


def _check_cap(max_per_document: int | None) -> None:
    if max_per_document is not None and (
        not isinstance(max_per_document, int) or max_per_document < 1
    ):
        raise ValueError(f"max_per_document must be None or >= 1, got {max_per_document!r}")


def passage_from_record(record: ChunkRecord, score: float) -> Passage:
    risk = record.metadata.get("risk") if record.metadata else None
    return Passage(
        risk=tuple(dict(r) for r in risk) if isinstance(risk, list) else (),
        chunk_id=record.chunk_id,
        doc_id=record.doc_id,
        source=record.source,
        text=record.text,
        score=float(score),
        citation=Citation(
            doc_id=record.doc_id,
            title=record.title,
            uri=record.uri,
            path=record.path,
            section=tuple(record.section),
            pages=tuple(record.pages),
            char_start=record.char_start,
            char_end=record.char_end,
            doc_version=record.doc_version,
        ),
    )
