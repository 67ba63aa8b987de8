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
    weighted_saturation,
)
from retrieval.index.embedded.files import release_pages
from retrieval.index.embedded.int8_kernel import select
from retrieval.index.embedded.snapshot import Snapshot
from retrieval.index.embedded.threads import one_thread
from retrieval.models import ScoredId

# Below this fraction of readable rows, gather the readable vectors in float32
# instead of scanning every row (exact, and cheaper than any full scan).
_GATHER_FRACTION = 0.08
# Below 1/_SPARSE_MASK readable rows, a term's postings are filtered by the row mask
# before they are scored. Above it, scoring every posting and dropping unreadable rows
# from the few candidates left is cheaper than the filter (a gather and two
# compressions per term, each dearer than scoring).
_SPARSE_MASK = 8
# A query term in more than 1/_COMMON_TERM of a segment's rows is "common": MaxScore
# may skip its postings (see _maxscore).
_COMMON_TERM = 20
# MaxScore is tried only when the common terms' postings number at least this share of
# the segment's rows. Below it, scoring them in bulk costs less than the attempt: a
# success saves no more than a failed attempt costs until the common postings
# approach the row count (docs/benchmarks.md#why-the-query-path-is-built-this-way).
_PRUNE_MIN_COMMON = 1.0
# Scoring a candidate row by binary search in every posting list costs about as much,
# per list, as scoring _LOOKUP_COST postings in bulk (numpy call overhead included).
_LOOKUP_COST = 20
# Relative slack when a bound is compared with sums added in another order: rounding
# moves such sums by ~1e-15 relative; the slack only ever keeps more rows.
_SLACK = 1e-9
# Segment searches answered without scoring the common terms' postings (for tests and tuning).
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
    top_seg, top_rows = seg_ix[order], rows[order]
    # Each segment's ids in one call: per-row reads add up, 50 per retriever.
    ids = [""] * len(order)
    for s in np.unique(top_seg).tolist():
        at = np.flatnonzero(top_seg == s)
        for pos, chunk_id in zip(
            at.tolist(), snapshot.views[s].segment.chunk_ids(top_rows[at]), strict=True
        ):
            ids[pos] = chunk_id
    return [
        ScoredId(chunk_id, score)
        for chunk_id, score in zip(ids, scores[order].tolist(), strict=True)
    ]


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
        weighted = {t: p for t, p in found.items() if t in weight}
        if not weighted:
            continue
        scored = _lexical_segment(weighted, weight, mask, norm, k, params.k1)
        if scored is None:
            continue
        cand, scores = scored
        best = _top(scores, k)
        hits.append((seg_ix, cand[best].astype(np.int64), scores[best]))
    return _merge(snapshot, hits, k)


def _lexical_segment(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: dict[str, float],
    mask: np.ndarray,
    norm: np.ndarray,
    k: int,
    k1: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Readable rows holding a query term, with their BM25 scores: all of them or a
    superset of the segment's top-k. None: no readable row has a query term.

    Every path sums a row's term scores in query order, as full scoring does, so the
    scores are bit-identical whichever path answers.
    """
    n_rows = len(mask)
    if np.count_nonzero(mask) * _SPARSE_MASK < n_rows:
        return _score_all(terms, weight, mask, norm, k, k1, filtered=True)
    common = [t for t, (rows, _) in terms.items() if len(rows) * _COMMON_TERM > n_rows]
    common_postings = sum(len(terms[t][0]) for t in common)
    if (
        common
        and len(common) < len(terms)
        and common_postings >= _PRUNE_MIN_COMMON * n_rows
        and all(weight[t] > 0 for t in terms)
    ):
        found = _maxscore(terms, common, weight, mask, norm, k, k1)
        if found is not None:
            return found
    return _score_all(terms, weight, mask, norm, k, k1, filtered=False)


def _add_term(
    acc: np.ndarray, rows: np.ndarray, tfs: np.ndarray, norm: np.ndarray, k1: float, w: float
) -> None:
    # np.add.at equals acc[rows] += ... for distinct rows (one term's are), at half the cost.
    np.add.at(acc, rows, weighted_saturation(tfs, norm[rows], k1, w))


def _score_all(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: dict[str, float],
    mask: np.ndarray,
    norm: np.ndarray,
    k: int,
    k1: float,
    *,
    filtered: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every posting scored into a dense per-row array; ``filtered``: readable postings only.

    Only rows scoring at least a cheap lower bound of the k-th best score are returned,
    so the candidates are a pass over a boolean array away, not a sort.
    """
    acc = np.zeros(len(mask))
    hit_rows = []
    for term, (rows, tfs) in terms.items():
        # Converted once: fancy indexing would convert int32 indices on every use.
        rows = rows.astype(np.intp)
        if filtered:
            keep = np.flatnonzero(mask[rows])
            rows, tfs = rows[keep], tfs[keep]
        _add_term(acc, rows, tfs, norm, k1, weight[term])
        hit_rows.append(rows)
    theta = _kth_of_one_list(acc, hit_rows, mask, k)
    if theta > 0:
        cand = np.flatnonzero(acc >= theta)
    elif all(weight[t] > 0 for t in terms):
        cand = np.flatnonzero(acc > 0)  # positive scores: a row was hit iff its sum is > 0
    else:
        cand = _present(hit_rows, len(mask))
    if not filtered:
        cand = cand[mask[cand]]
    if len(cand) == 0:
        return None
    return cand, acc[cand]


def _kth_of_one_list(
    acc: np.ndarray, hit_rows: list[np.ndarray], mask: np.ndarray, k: int
) -> float:
    """The k-th best score among the readable rows of the shortest posting list that has k.

    A list's rows are distinct, so at least k readable rows score this much: a lower
    bound of the k-th best overall. 0.0 when no list has k readable rows.
    """
    for rows in sorted(hit_rows, key=len):
        if len(rows) < k:
            continue
        readable = rows[np.flatnonzero(mask[rows])]  # twice as fast as a boolean index
        if len(readable) >= k:
            return _kth(acc[readable], k)
    return 0.0


def _kth(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, len(values) - k)[len(values) - k])


def _present(hit_rows: list[np.ndarray], n_rows: int) -> np.ndarray:
    present = np.zeros(n_rows, dtype=bool)
    for rows in hit_rows:
        present[rows] = True
    return np.flatnonzero(present)


def _maxscore(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    common: list[str],
    weight: dict[str, float],
    mask: np.ndarray,
    norm: np.ndarray,
    k: int,
    k1: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A superset of the top-k without scoring the common terms' postings (MaxScore,
    Turtle & Flood 1995), or None when that cannot be shown or would not pay.

    A term adds less than ``weight * (k1 + 1)`` to a row's score. The rare terms are
    scored first; theta, a lower bound of their k-th best partial score, bounds the
    final k-th best from below too (scores only grow). When the common terms' bounds
    sum to less than theta, a row with none of the rare terms cannot reach the top-k,
    and neither can a row whose partial score plus that sum stays below theta: only the
    few rows left are scored in full, by binary search in every posting list (rows are
    sorted). Weights must be positive.
    """
    bound = sum(weight[t] * (k1 + 1.0) for t in common)
    rare = [t for t in terms if t not in common]
    if bound >= sum(weight[t] * (k1 + 1.0) for t in rare):
        return None  # theta can never exceed the rare terms' own bound
    acc = np.zeros(len(mask))
    hit_rows = []
    for term in rare:
        rows, tfs = terms[term]
        rows = rows.astype(np.intp)
        _add_term(acc, rows, tfs, norm, k1, weight[term])
        hit_rows.append(rows)
    # Rows whose partial score is below this cannot reach theta (see _SLACK).
    floor = _kth_of_one_list(acc, hit_rows, mask, k) * (1.0 - _SLACK) - bound
    if floor <= 0:
        return None
    cand = np.flatnonzero(acc >= floor)
    cand = cand[mask[cand]]
    if len(terms) * len(cand) * _LOOKUP_COST > sum(len(terms[t][0]) for t in common):
        return None
    global lexical_pruned_segments
    lexical_pruned_segments += 1
    return cand, _scores_of_rows(terms, weight, norm, k1, cand)


def _scores_of_rows(
    terms: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: dict[str, float],
    norm: np.ndarray,
    k1: float,
    cand: np.ndarray,
) -> np.ndarray:
    """BM25 of rows ``cand`` (sorted), summed in query order like :func:`_score_all`."""
    scores = np.zeros(len(cand))
    for term, (rows, tfs) in terms.items():
        needles = cand.astype(rows.dtype)  # searchsorted would convert the longer array
        pos = np.searchsorted(rows, needles)
        np.minimum(pos, len(rows) - 1, out=pos)
        hit = np.flatnonzero(rows[pos] == needles)
        if len(hit):
            scores[hit] += weighted_saturation(tfs[pos[hit]], norm[cand[hit]], k1, weight[term])
    return scores


def dense_top_k(
    snapshot: Snapshot,
    query: np.ndarray,
    masks: Sequence[np.ndarray],
    k: int,
    *,
    dense_kernel: str = "auto",
) -> list[ScoredId]:
    """Exact cosine (vectors and query are unit length) over readable rows.

    Per segment, the cheapest of three exact strategies: float32 over the
    readable rows when they are few (or the segment is small), else an int8
    first pass whose candidates are rescored in float32 (see quantized.py), with
    torch's kernel where verified (``dense_kernel="auto"``) or numpy's.
    """
    hits = []
    large = any(v.segment.rows >= QUANTIZED_MIN_ROWS for v in snapshot.views)
    kernel = select(len(query), dense_kernel) if large else None
    with one_thread(kernel.torch if kernel is not None else None):
        for seg_ix, (view, mask) in enumerate(zip(snapshot.views, masks, strict=True)):
            allowed = int(np.count_nonzero(mask))
            if allowed == 0:
                continue
            seg = view.segment
            if seg.rows < QUANTIZED_MIN_ROWS:
                rows, scores = _dense_exact(seg.vectors, query, mask, allowed)
            else:
                found = None
                if allowed >= _GATHER_FRACTION * seg.rows:
                    found = _dense_quantized(seg, query, mask, allowed, k, dense_kernel)
                if found is not None:
                    rows, scores = found  # its float32 rows were read, not mapped
                else:  # few readable rows, or a bound broken: float32 through the map
                    rows, scores = _dense_exact(seg.vectors, query, mask, allowed)
                    # Rows read at random must not pile up as resident memory (files.py).
                    release_pages(seg.vectors)
            best = _top(scores, k)
            hits.append((seg_ix, rows[best].astype(np.int64), scores[best].astype(np.float64)))
    return _merge(snapshot, hits, k)


# Segments smaller than this are scanned in float32 (a few ms at most).
QUANTIZED_MIN_ROWS = 32_768
# First-pass candidates rescored before the bound is applied: k and a quarter, at
# least 64. The int8 order is nearly the exact one, so more candidates only cost
# reads; the bound still adds every row that could beat the k-th
# (docs/benchmarks.md#why-the-query-path-is-built-this-way).
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


def _dense_quantized(
    seg, query: np.ndarray, mask: np.ndarray, allowed: int, k: int, dense_kernel: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and exact float32 scores of a superset of the segment's readable top-k.

    None when a rescored row breaks the first pass's error bound (the caller then
    scans in float32).
    """
    global quantized_fallbacks
    n_cand = max(k + k // 4, _MIN_CANDIDATES)
    if n_cand >= allowed:
        rows = np.flatnonzero(mask)
        return rows, np.asarray(seg.vector_rows.rows(rows) @ query, dtype=np.float32)
    qv = seg.quantized()
    first = qv.first_pass(query, mask, n_cand, dense_kernel=dense_kernel)
    approx, cand, q_err = first.scores, first.best, first.query_error
    exact = np.asarray(seg.vector_rows.rows(cand) @ query, dtype=np.float32)
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
        more = np.asarray(seg.vector_rows.rows(extra) @ query, dtype=np.float32)
        scores = np.concatenate([exact, more])
    else:
        rows, scores = cand, exact
    global dense_rescored_rows
    dense_rescored_rows += len(rows)
    checked = qv.error_bounds(approx[rows], rows, q_err)
    if np.any(np.abs(scores.astype(np.float64) - approx[rows]) > checked):
        quantized_fallbacks += 1
        return None
    return rows, scores
