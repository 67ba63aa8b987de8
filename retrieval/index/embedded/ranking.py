"""Exact top-k, lexical (BM25) and dense (cosine), over the rows a principal may read.

Both take the per-segment row masks first and rank only rows inside them, so
the answer is the true top-k among readable chunks however selective the
permission filter is. Ties are broken by segment order then row, which makes
results deterministic for a given generation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from retrieval.index.embedded.bm25 import (
    Bm25Params,
    Bm25Variant,
    idf_lucene,
    idf_okapi,
    saturation,
)
from retrieval.index.embedded.files import release_pages
from retrieval.index.embedded.quantized import torch_or_none
from retrieval.index.embedded.snapshot import Snapshot
from retrieval.index.embedded.threads import one_thread
from retrieval.models import ScoredId

# Below this fraction of readable rows, gather the readable vectors in float32
# instead of scanning every row (exact, and cheaper than any full scan).
_GATHER_FRACTION = 0.08
# Accumulate into a dense per-row array once postings exceed 1/16 of the rows.
_DENSE_ACCUMULATE = 16
# A query term in more than 1/_COMMON_TERM of a segment's rows is "common": its
# postings are read only when MaxScore pruning cannot rule them out.
_COMMON_TERM = 20
# Segment searches answered without reading the common terms' postings (for tests and tuning).
lexical_pruned_segments = 0


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; ties keep index order."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # argpartition may cut a tie at the boundary arbitrarily: take every tied element.
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order][:k]


def _merge(
    snapshot: Snapshot, hits: Sequence[tuple[int, np.ndarray, np.ndarray]], k: int
) -> list[ScoredId]:
    if not hits:
        return []
    seg_ix = np.concatenate([np.full(len(rows), i, dtype=np.int64) for i, rows, _ in hits])
    rows = np.concatenate([r for _, r, _ in hits])
    scores = np.concatenate([s for _, _, s in hits])
    order = np.lexsort((rows, seg_ix, -scores))[:k]
    return [
        ScoredId(snapshot.views[int(seg_ix[i])].segment.chunk_id(int(rows[i])), float(scores[i]))
        for i in order
    ]


def _accumulate(
    rows_parts: list[np.ndarray], score_parts: list[np.ndarray], n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-term scores per row: sparse (sort) for rare terms, dense for common ones."""
    total = sum(len(r) for r in rows_parts)
    if total * _DENSE_ACCUMULATE > n_rows:
        acc = np.zeros(n_rows, dtype=np.float64)
        for rows, scores in zip(rows_parts, score_parts, strict=True):
            acc[rows] += scores  # rows are unique within one term's postings
        if all(bool(np.all(s > 0)) for s in score_parts):
            cand = np.flatnonzero(acc)  # positive scores: a row was hit iff its sum is > 0
        else:
            present = np.zeros(n_rows, dtype=bool)
            for rows in rows_parts:
                present[rows] = True
            cand = np.flatnonzero(present)
        return cand, acc[cand]
    cand, inverse = np.unique(np.concatenate(rows_parts), return_inverse=True)
    return cand, np.bincount(inverse, weights=np.concatenate(score_parts), minlength=len(cand))


def lexical_top_k(
    snapshot: Snapshot,
    terms: Sequence[str],
    masks: Sequence[np.ndarray],
    k: int,
    params: Bm25Params,
) -> list[ScoredId]:
    """BM25 over live statistics; only rows containing a query term are candidates.

    A repeated query term counts once per repeat (as rank-bm25 does).
    """
    if not terms or snapshot.live_count == 0:
        return []
    query = Counter(terms)
    # Postings per segment and term, and the live document frequency of each term.
    postings: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
    df = dict.fromkeys(query, 0)
    for view in snapshot.views:
        found = {}
        for term in query:
            p = view.segment.postings(term)
            if p is None:
                continue
            found[term] = p
            df[term] += (
                len(p[0]) if view.live_count == view.segment.rows else int(view.live[p[0]].sum())
            )
        postings.append(found)
    n = snapshot.live_count
    df_arr = np.array([df[t] for t in query], dtype=np.float64)
    if params.variant is Bm25Variant.OKAPI:
        idf_arr = idf_okapi(n, df_arr, snapshot.okapi_average_idf(), params.epsilon)
    else:
        idf_arr = idf_lucene(n, df_arr)
    weight = {t: float(idf_arr[i]) * query[t] for i, t in enumerate(query) if df[t] > 0}
    norms = snapshot.length_norms(params.k1, params.b)

    hits = []
    for seg_ix, (found, mask, norm) in enumerate(zip(postings, masks, norms, strict=True)):
        terms = {t: p for t, p in found.items() if t in weight}
        if not terms:
            continue
        scored = _lexical_pruned(terms, weight, mask, norm, k, params.k1)
        if scored is None:
            continue
        cand, scores = scored
        best = _top(scores, k)
        hits.append((seg_ix, cand[best].astype(np.int64), scores[best]))
    return _merge(snapshot, hits, k)


def _score_terms(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: dict[str, float],
    mask: np.ndarray,
    norm: np.ndarray,
    k1: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    rows_parts, score_parts = [], []
    for term, (rows, tfs) in terms.items():
        keep = mask[rows]
        rows = rows[keep]
        if len(rows) == 0:
            continue
        rows_parts.append(rows)
        score_parts.append(weight[term] * saturation(tfs[keep], norm[rows], k1))
    if not rows_parts:
        return None
    return _accumulate(rows_parts, score_parts, len(mask))


def _lexical_pruned(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: dict[str, float],
    mask: np.ndarray,
    norm: np.ndarray,
    k: int,
    k1: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Readable rows with a query term and their BM25 scores: all of them, or a superset
    of the top-k that skips the common terms' postings (MaxScore, Turtle & Flood 1995).

    A term's contribution is below ``weight * (k1 + 1)``. The rare terms are scored
    first; their k-th best partial score ``theta`` is a lower bound of the final
    k-th best. When the common terms' bounds sum to less than ``theta``, a row
    with none of the rare terms cannot reach the top-k, and neither can a row
    whose partial score plus that sum stays below ``theta``: only the few rows
    left look up their common-term frequencies (binary search in the postings,
    whose rows are sorted). Otherwise every term is scored in full. Either way
    the top-k is exact. None: no readable row has a query term.
    """
    n_rows = len(mask)
    common = {t: p for t, p in terms.items() if len(p[0]) * _COMMON_TERM > n_rows}
    rare = {t: p for t, p in terms.items() if t not in common}
    if not common or not rare or any(weight[t] <= 0 for t in terms):
        return _score_terms(terms, weight, mask, norm, k1)
    bound = sum(weight[t] * (k1 + 1.0) for t in common)
    if bound >= sum(weight[t] * (k1 + 1.0) for t in rare):
        # theta can never exceed the rare terms' own bound: pruning would fail.
        return _score_terms(terms, weight, mask, norm, k1)
    partial = _score_terms(rare, weight, mask, norm, k1)
    if partial is not None and len(partial[0]) >= k:
        cand, scores = partial
        theta = float(np.partition(scores, len(scores) - k)[len(scores) - k])
        if bound < theta:
            global lexical_pruned_segments
            lexical_pruned_segments += 1
            keep = scores + bound >= theta
            cand, scores = cand[keep], scores[keep].copy()
            for term, (rows, tfs) in common.items():
                pos = np.minimum(np.searchsorted(rows, cand), len(rows) - 1)
                hit = np.flatnonzero(rows[pos] == cand)
                scores[hit] += weight[term] * saturation(tfs[pos[hit]], norm[cand[hit]], k1)
            return cand, scores
    # Scoring everything again repeats only the rare terms' short postings, and is
    # cheaper than merging two accumulations (each a pass over the segment's rows).
    return _score_terms(terms, weight, mask, norm, k1)


def dense_top_k(
    snapshot: Snapshot, query: np.ndarray, masks: Sequence[np.ndarray], k: int
) -> list[ScoredId]:
    """Exact cosine (vectors and query are unit length) over readable rows.

    Per segment, the cheapest of three exact strategies: float32 over the
    readable rows when they are few (or the segment is small), else an int8
    first pass whose candidates are rescored in float32 (see quantized.py).
    """
    hits = []
    large = any(v.segment.rows >= QUANTIZED_MIN_ROWS for v in snapshot.views)
    with one_thread(torch_or_none() if large else None):
        for seg_ix, (view, mask) in enumerate(zip(snapshot.views, masks, strict=True)):
            allowed = int(np.count_nonzero(mask))
            if allowed == 0:
                continue
            seg = view.segment
            if seg.rows < QUANTIZED_MIN_ROWS:
                rows, scores = _dense_exact(seg.vectors, query, mask, allowed)
            else:
                if allowed < _GATHER_FRACTION * seg.rows:
                    rows, scores = _dense_exact(seg.vectors, query, mask, allowed)
                else:
                    found = _dense_quantized(seg, query, mask, allowed, k)
                    rows, scores = found or _dense_exact_scan(seg, query, mask)
                # Rows read at random must not pile up as resident memory (files.py).
                release_pages(seg.vectors)
            best = _top(scores, k)
            hits.append((seg_ix, rows[best].astype(np.int64), scores[best].astype(np.float64)))
    return _merge(snapshot, hits, k)


# Segments smaller than this are scanned in float32 (a few ms at most).
QUANTIZED_MIN_ROWS = 32_768
# First-pass candidates rescored before the bound is applied: a multiple of k.
_OVERSAMPLE = 4
_MIN_CANDIDATES = 64
# Counts first passes abandoned because a rescored row broke the error bound (never
# seen; kept so a test or an operator can tell).
quantized_fallbacks = 0
# Rows rescored in float32 after the int8 pass, summed over searches (for the benchmark).
dense_rescored_rows = 0


def _dense_exact(
    vectors: np.ndarray, query: np.ndarray, mask: np.ndarray, allowed: int
) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(mask)
    if allowed < _GATHER_FRACTION * len(mask):
        return rows, vectors[rows] @ query
    return rows, (vectors @ query)[rows]


def _dense_exact_scan(seg, query: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(mask)
    return rows, (seg.vectors @ query)[rows]


def _dense_quantized(
    seg, query: np.ndarray, mask: np.ndarray, allowed: int, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and exact float32 scores of a superset of the segment's readable top-k.

    None when a rescored row breaks the first pass's error bound (the caller then
    scans in float32).
    """
    global quantized_fallbacks
    qv = seg.quantized()
    approx, q_err = qv.approximate_scores(query)
    approx[~mask] = -np.inf
    n_cand = max(_OVERSAMPLE * k, _MIN_CANDIDATES)
    if n_cand >= allowed:
        return _dense_exact(seg.vectors, query, mask, allowed)
    cand = np.sort(np.argpartition(approx, len(approx) - n_cand)[-n_cand:])
    exact = np.asarray(seg.vectors[cand] @ query, dtype=np.float32)
    tau = float(np.partition(exact, len(exact) - k)[len(exact) - k])
    # Rows whose first-pass score plus its error bound reaches tau may still beat the
    # k-th candidate: a cheap global bound first, then each row's own.
    # |approx| <= 1 + bound for any row; candidates hold the largest approx values.
    loose = qv.max_error_bound(max(float(np.abs(approx[cand]).max()), 1.1), q_err)
    wide = np.flatnonzero(approx >= tau - loose)
    bounds = qv.error_bounds(approx[wide], wide, q_err)
    extra = np.setdiff1d(wide[approx[wide] + bounds >= tau], cand, assume_unique=True)
    if len(extra):
        rows = np.concatenate([cand, extra])
        scores = np.concatenate([exact, np.asarray(seg.vectors[extra] @ query, np.float32)])
    else:
        rows, scores = cand, exact
    global dense_rescored_rows
    dense_rescored_rows += len(rows)
    checked = qv.error_bounds(approx[rows], rows, q_err)
    if np.any(np.abs(scores.astype(np.float64) - approx[rows]) > checked):
        quantized_fallbacks += 1
        return None
    return rows, scores
