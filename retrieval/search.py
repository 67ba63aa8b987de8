"""Hybrid search: lexical and dense candidates (permission-filtered inside the index), fused,
turned into cited passages.

Example::

    searcher = Searcher(index, embedder, fusion="rrf", candidates=50)
    passages = searcher.search("per diem rates", Principal.of("alice", ["staff"]), k=5)
    print(passages[0].citation.uri, passages[0].citation.section)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import numpy as np

from retrieval.fusion import FusionMethod, fuse
from retrieval.index.base import ChunkRecord, IndexBackend
from retrieval.models import NO_FILTERS, Citation, Passage, Ranked, ScoredId, SearchFilters
from retrieval.parallel import Beside, serving
from trove.acl import Principal
from trove.config import RetrievalConfig

# One set of defaults: the configuration's (chosen by measurement, docs/benchmarks.md).
_DEFAULTS = RetrievalConfig()


class QueryEncoder(Protocol):
    """What the searcher needs from ``pipelines.embed.Embedder``."""

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
    """Adds a verified caller's source groups (see :class:`trove.directory.GroupDirectory`)."""

    def expand(self, principal: Principal) -> Principal: ...


class Searcher:
    """Runs searches against one index as a given principal.

    :param index: any :class:`~retrieval.index.base.IndexBackend`.
    :param embedder: has ``encode_query(text) -> np.ndarray``; only used for dense retrieval.
    :param fusion: ``"rrf"`` or ``"blend"`` (see :mod:`retrieval.fusion`).
    :param rrf_k: the RRF constant.
    :param dense_weight: weight of the dense list in fusion; lexical gets ``1 - dense_weight``.
    :param candidates: how many hits each retriever contributes before fusion (at least ``k``).
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
    ):
        self.fusion = fusion if isinstance(fusion, FusionMethod) else FusionMethod.from_str(fusion)
        if rrf_k < 1:
            raise ValueError(f"rrf_k must be >= 1, got {rrf_k}")
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be within [0, 1], got {dense_weight}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.index = index
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.candidates = candidates
        self.identity = identity

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
        """The top-``k`` passages ``principal`` may read, best first, each with its citation."""
        return self.search_ranked(query, principal, k, filters, mode=mode)[0]

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
    ) -> tuple[list[Passage], Ranked]:
        """Like :meth:`search`, also returning each retriever's candidate list (for evaluation)."""
        with serving():
            return self._search_ranked(query, principal, k, filters, mode)

    def _search_ranked(
        self,
        query: str,
        principal: Principal,
        k: int,
        filters: SearchFilters,
        mode: SearchMode | str,
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
            return self._passages(hits, principal, k), ranked
        if mode is not SearchMode.LEXICAL and self.embedder is None:
            raise ValueError(f"search mode {mode.value!r} needs an embedder; none was given")
        if mode is SearchMode.LEXICAL:
            ranked.lexical = self.index.search_lexical(query, principal, n, filters)
        elif mode is SearchMode.DENSE:
            ranked.dense = self.index.search_dense(
                self.embedder.encode_query(query), principal, n, filters
            )
        else:
            # The lexical search (~1 ms at 100k chunks) runs on an idle core while the
            # query is embedded here (~5 ms); both release the GIL for most of it.
            lexical = Beside(self.index.search_lexical, query, principal, n, filters)
            vector = self.embedder.encode_query(query)
            ranked.lexical = lexical.join()
            ranked.dense = self.index.search_dense(vector, principal, n, filters)
        if mode is SearchMode.LEXICAL:
            hits = ranked.lexical
        elif mode is SearchMode.DENSE:
            hits = ranked.dense
        else:
            hits = fuse(
                self.fusion,
                [ranked.lexical, ranked.dense],
                [1.0 - self.dense_weight, self.dense_weight],
                rrf_k=self.rrf_k,
            )
        return self._passages(hits, principal, k), ranked

    def _passages(self, hits: list[ScoredId], principal: Principal, k: int) -> list[Passage]:
        # Records are read k at a time (each costs reads from disk): a chunk deleted
        # or re-permissioned between the search and this read (another generation)
        # is dropped, never shown, and the next hits take its place.
        out: list[Passage] = []
        start = 0
        while len(out) < k and start < len(hits):
            window = hits[start : start + k - len(out)]
            start += len(window)
            ids = [h.chunk_id for h in window]
            records = {r.chunk_id: r for r in self.index.get_chunks(ids)}
            for hit in window:
                record = records.get(hit.chunk_id)
                if record is not None and record.acl.permits(principal):
                    out.append(passage_from_record(record, hit.score))
        return out


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
