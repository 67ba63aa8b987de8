"""Fusing ranked lists from several retrievers into one, as pure functions.

* ``rrf``: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
  score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1. Uses ranks only, so it
  needs no score calibration between BM25 and cosine — the safe default.
* ``blend``: min-max normalise each list's scores to [0, 1], then a weighted
  sum (a document missing from a list gets 0 from it). Keeps score gaps, so a
  dominant hit in one retriever can win outright.
* ``zscore``: standardise each list's scores (subtract the list's mean, divide
  by its standard deviation), then a weighted sum; a document missing from a
  list gets that list's lowest standardised score (it ranked below all of
  them). Unlike min-max, one outlying top score does not squash the rest, and
  the scale does not depend on how many candidates a list holds or on the
  corpus's score range (BM25 is unbounded, cosine is not).

Ties keep the order in which ids were first seen (earlier lists first), so
fusion is deterministic.

**Document-level fusion** (:func:`fuse_by_document`): any of the three methods
can also score *documents*. Each list gives a document its best passage's
contribution (so a document whose best BM25 passage and best dense passage are
different chunks gets credit from both lists, where passage-level fusion gives
each chunk one list's score and the other's floor), the document's fused score
is the weighted sum of those, and every passage of the document is lifted by
what the document scores above its best passage. Documents therefore rank by
their fused score, and passages of one document keep their own order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from retrieval.models import ScoredId


class FusionMethod(StrEnum):
    RRF = "rrf"
    BLEND = "blend"
    ZSCORE = "zscore"

    @classmethod
    def from_str(cls, value: str) -> FusionMethod:
        try:
            return cls(value.strip().lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown fusion method {value!r} (valid: {valid})") from None


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights given for {n} rankings")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    return [float(w) for w in weights]


def _sorted(scores: dict[str, float]) -> list[ScoredId]:
    # sorted() is stable and dicts keep insertion order: ties stay in first-seen order.
    return [ScoredId(cid, s) for cid, s in sorted(scores.items(), key=lambda kv: -kv[1])]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[ScoredId]],
    weights: Sequence[float] | None = None,
    k: int = 60,
) -> list[ScoredId]:
    """Fuse best-first rankings by weighted reciprocal rank.

    :param rankings: one best-first list per retriever; a repeated id counts once, at its
        best rank, and ranks count distinct ids.
    :param weights: one weight per ranking (default: all 1).
    :param k: the RRF constant; larger values flatten the contribution of top ranks.
    :returns: every id seen, best first, with its fused score.
    """
    if k < 1:
        raise ValueError(f"rrf k must be >= 1, got {k}")
    ws = _weights(len(rankings), weights)
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, ws, strict=True):
        # A repeated id counts once, at its best rank; ranks count distinct ids.
        distinct = dict.fromkeys(hit.chunk_id for hit in ranking)
        for rank, chunk_id in enumerate(distinct, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w / (k + rank)
    return _sorted(scores)


def score_blend(
    rankings: Sequence[Sequence[ScoredId]], weights: Sequence[float] | None = None
) -> list[ScoredId]:
    """Fuse by a weighted sum of min-max normalised scores (a flat list normalises to 1)."""
    ws = _weights(len(rankings), weights)
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, ws, strict=True):
        if not ranking:
            continue
        best: dict[str, float] = {}
        for hit in ranking:
            best[hit.chunk_id] = max(hit.score, best.get(hit.chunk_id, hit.score))
        lo, hi = min(best.values()), max(best.values())
        span = hi - lo
        for cid, s in best.items():
            norm = (s - lo) / span if span > 0 else 1.0
            scores[cid] = scores.get(cid, 0.0) + w * norm
    return _sorted(scores)


def zscore_blend(
    rankings: Sequence[Sequence[ScoredId]], weights: Sequence[float] | None = None
) -> list[ScoredId]:
    """Fuse by a weighted sum of standardised scores (see the module docstring).

    A list whose scores are all equal standardises to 0 everywhere: it cannot
    tell its hits apart, so it adds nothing to their order.
    """
    ws = _weights(len(rankings), weights)
    per_list: list[tuple[float, dict[str, float], float]] = []
    for ranking, w in zip(rankings, ws, strict=True):
        best: dict[str, float] = {}
        for hit in ranking:
            best[hit.chunk_id] = max(hit.score, best.get(hit.chunk_id, hit.score))
        if not best:
            continue
        values = list(best.values())
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        z = {cid: (s - mean) / std if std > 0 else 0.0 for cid, s in best.items()}
        per_list.append((w, z, min(z.values())))
    ids = dict.fromkeys(cid for _, z, _ in per_list for cid in z)
    scores = {cid: sum(w * z.get(cid, floor) for w, z, floor in per_list) for cid in ids}
    return _sorted(scores)


def _contributions(
    method: FusionMethod, ranking: Sequence[ScoredId], weight: float, rrf_k: int
) -> tuple[dict[str, float], float]:
    """Each id's weighted share of the fused score in one list, and what a missing id gets.

    The same terms :func:`reciprocal_rank_fusion`, :func:`score_blend` and
    :func:`zscore_blend` add up.
    """
    if method is FusionMethod.RRF:
        distinct = dict.fromkeys(hit.chunk_id for hit in ranking)
        return {cid: weight / (rrf_k + r) for r, cid in enumerate(distinct, start=1)}, 0.0
    best: dict[str, float] = {}
    for hit in ranking:
        best[hit.chunk_id] = max(hit.score, best.get(hit.chunk_id, hit.score))
    if not best:
        return {}, 0.0
    values = list(best.values())
    if method is FusionMethod.BLEND:
        lo, hi = min(values), max(values)
        span = hi - lo
        return {c: weight * ((s - lo) / span if span > 0 else 1.0) for c, s in best.items()}, 0.0
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    z = {c: (s - mean) / std if std > 0 else 0.0 for c, s in best.items()}
    return {c: weight * v for c, v in z.items()}, weight * min(z.values())


def fuse_by_document(
    method: FusionMethod | str,
    rankings: Sequence[Sequence[ScoredId]],
    weights: Sequence[float] | None,
    document_of: Callable[[str], str],
    *,
    rrf_k: int = 60,
) -> list[ScoredId]:
    """Fuse as :func:`fuse` does, then rank documents by their fused score (module docstring).

    :param document_of: the document an id belongs to.
    :returns: every id seen, best first; an id's score is its passage-level fused score
        plus its document's lift (0 for a document seen through one passage only).
    """
    method = method if isinstance(method, FusionMethod) else FusionMethod.from_str(method)
    passages = fuse(method, rankings, weights, rrf_k=rrf_k)
    ws = _weights(len(rankings), weights)
    per_list = [_contributions(method, r, w, rrf_k) for r, w in zip(rankings, ws, strict=True)]
    documents: dict[str, float] = {}  # the document's fused score
    best_passage: dict[str, float] = {}
    for hit in passages:
        doc = document_of(hit.chunk_id)
        best_passage[doc] = max(hit.score, best_passage.get(doc, hit.score))
        documents.setdefault(doc, 0.0)
    for contribution, floor in per_list:
        best: dict[str, float] = {}
        for cid, value in contribution.items():
            doc = document_of(cid)
            best[doc] = max(value, best.get(doc, value))
        for doc in documents:
            documents[doc] += best.get(doc, floor)
    lifted = {
        hit.chunk_id: hit.score + max(0.0, documents[doc] - best_passage[doc])
        for hit in passages
        for doc in (document_of(hit.chunk_id),)
    }
    return _sorted(lifted)


def fuse(
    method: FusionMethod | str,
    rankings: Sequence[Sequence[ScoredId]],
    weights: Sequence[float] | None = None,
    *,
    rrf_k: int = 60,
) -> list[ScoredId]:
    """Dispatch to the fusion function named by ``method``."""
    method = method if isinstance(method, FusionMethod) else FusionMethod.from_str(method)
    if method is FusionMethod.RRF:
        return reciprocal_rank_fusion(rankings, weights, k=rrf_k)
    if method is FusionMethod.ZSCORE:
        return zscore_blend(rankings, weights)
    return score_blend(rankings, weights)
