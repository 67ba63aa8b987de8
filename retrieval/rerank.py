"""Reranking after fusion, and the evidence score that ``low_confidence`` is judged on.

Fusion (RRF) orders candidates by rank alone, so its scores say nothing about
how well the best passage actually matches. This stage re-scores the fused
candidates:

* :class:`EvidenceReranker` (the default, no extra model weights): the mean of
  the passage's cosine similarity to the query (from the dense retriever, which
  already computed it; a candidate the dense retriever did not return gets the
  lowest cosine it did return) and the share of distinct query terms (stemmed,
  stop words removed) that occur in the passage. Both parts lie in [0, 1], so
  the score is comparable across queries: the service thresholds it for
  ``low_confidence`` whichever reranker orders the results.
* :class:`CrossEncoderReranker`: a sentence-transformers ``CrossEncoder``
  reading query and passage together; loaded lazily, one per model path.

Example::

    reranker = build_reranker(settings.retrieval.reranker)   # None -> EvidenceReranker
    order = reranker.scores("per diem rates", candidates)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import TroveError
from retrieval.analysis import DEFAULT_ANALYZER, Analyzer
from retrieval.models import Passage


class RerankError(TroveError, RuntimeError):
    """The configured reranker cannot be loaded or used; the message names it."""


@dataclass(frozen=True)
class Candidate:
    """A fused candidate with what each retriever said about it."""

    passage: Passage
    fused: float
    dense: float | None = None  # cosine similarity, when the dense retriever returned it
    lexical: float | None = None  # BM25, when the lexical retriever returned it


class Reranker(Protocol):
    name: str

    def scores(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        """One score per candidate, higher is better."""


def term_coverage(query_terms: Sequence[str], passage_terms: set[str]) -> float:
    """Share of the distinct query terms found in the passage (0 when the query has none)."""
    distinct = set(query_terms)
    if not distinct:
        return 0.0
    return len(distinct & passage_terms) / len(distinct)


def evidence_scores(
    query: str, candidates: Sequence[Candidate], analyzer: Analyzer = DEFAULT_ANALYZER
) -> list[float]:
    """Scores in [0, 1]: mean of clipped query–passage cosine and query-term coverage.

    Coverage equals ``term_coverage(analyzer.analyze(query), set(analyzer.analyze(text)))``
    for each passage, computed on each passage's distinct words: a word is stemmed
    once per call (passages of one result share most of their words), and the
    words whose term is a query term are matched with one set intersection.
    What is learnt about words lives for this call only: nothing read from one
    principal's passages outlives the request.
    """
    if not candidates:
        return []
    known = [c.dense for c in candidates if c.dense is not None]
    floor = min(known) if known else 0.0
    query_terms = set(analyzer.analyze(query))
    # Stemming keeps a word's first character (it rewrites suffixes; only a leading
    # apostrophe, which the word split never leaves, is dropped), so a word whose first
    # character starts no query term cannot be one: it is never analysed.
    initials = {term[0] for term in query_terms if term}
    seen: set[str] = set()  # words analysed so far in this call
    matching: dict[str, str] = {}  # those of them whose term is a query term -> the term
    out = []
    for c in candidates:
        cosine = min(max(c.dense if c.dense is not None else floor, 0.0), 1.0)
        coverage = 0.0
        if query_terms:
            words = set(analyzer.words(c.passage.text))
            for word in words.difference(seen):
                if word[:1] not in initials and not word.startswith("'"):
                    continue
                term = analyzer.term(word)
                if term is not None and term in query_terms:
                    matching[word] = term
            seen |= words
            found = {matching[w] for w in words.intersection(matching)}
            coverage = len(found) / len(query_terms)
        out.append(0.5 * cosine + 0.5 * coverage)
    return out


class EvidenceReranker:
    """The default reranker: no model weights, scores in [0, 1] (see module docstring)."""

    name = "evidence"

    def __init__(self, analyzer: Analyzer = DEFAULT_ANALYZER):
        self.analyzer = analyzer

    def scores(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        return evidence_scores(query, candidates, self.analyzer)


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` (a local path or a hub name for online users).

    :param model: what ``CrossEncoder(...)`` accepts; loaded on first use or ``warm_up()``.
    :param max_length: passage pairs are truncated to this many word pieces.
    """

    def __init__(self, model: str, *, max_length: int = 512, batch_size: int = 32):
        if not model or not model.strip():
            raise RerankError(f"cross-encoder model must be non-empty, got {model!r}")
        self.model_name = model
        self.name = f"cross-encoder:{model}"
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(self.model_name, max_length=self.max_length)
            except Exception as exc:  # loading errors come in many types; name the model
                raise RerankError(f"cannot load cross-encoder {self.model_name!r}: {exc}") from exc

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def scores(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        self.warm_up()
        pairs = [(query, c.passage.text) for c in candidates]
        raw = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in raw]


_CROSS_ENCODERS: dict[str, CrossEncoderReranker] = {}
_CACHE_LOCK = threading.Lock()


def build_reranker(model: str | None) -> Reranker:
    """The configured reranker: a cached :class:`CrossEncoderReranker`, else the default."""
    if model is None or not model.strip():
        return EvidenceReranker()
    with _CACHE_LOCK:
        if model not in _CROSS_ENCODERS:
            _CROSS_ENCODERS[model] = CrossEncoderReranker(model)
        return _CROSS_ENCODERS[model]


def rerank(
    query: str, candidates: Sequence[Candidate], reranker: Reranker
) -> list[tuple[Candidate, float]]:
    """Candidates with their new scores, best first; ties keep the fused order."""
    scores = reranker.scores(query, candidates)
    if len(scores) != len(candidates):
        raise RerankError(
            f"reranker {reranker.name!r} returned {len(scores)} scores for "
            f"{len(candidates)} candidates"
        )
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])
    return [(candidates[i], scores[i]) for i in order]
