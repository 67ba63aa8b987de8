"""Int8 copies of a segment's vectors, for a fast first pass that still gives exact top-k.

Each unit vector ``x`` is stored a second time as ``codes`` (int8) and a per-row
``scale`` (float32, exactly representable in bfloat16), with the residual norm
``r = ||x - scale * codes||`` (rounded up). Scanning the int8 copy reads 384
bytes per row instead of 1,536.

The first pass uses torch's int8-weight kernel ``aten._weight_int8pack_mm``
(bfloat16 query, int8 rows, per-row scale): measured on this project's 2-core
AVX2 machines several times faster than numpy's float32 BLAS scan of the same
rows (float16/bfloat16 BLAS, binary codes with popcount and int8 ``_int_mm``
were slower: docs/benchmarks.md#measured-alternatives-dense-first-pass). It is a private op
whose kernels crash on some shapes, so it runs only where a child process
verified it, on the shapes it verified (:mod:`int8_kernel`). Otherwise, or with
``dense_kernel="numpy"``, numpy converts blocks of codes to float32 (slower,
as exact). A large segment's pass is split in two halves, the second on an idle
helper thread (:class:`retrieval.parallel.Beside`; inline when none is idle).

**Exactness.** For the exact cosine ``s = q . x`` and the first-pass score
``K``, :func:`error_bounds` gives ``b`` with ``|s - K| <= b``:

* ``q . (x - x_hat)``, at most ``r`` (Cauchy-Schwarz, ``|q| = 1``);
* ``(q - q_bf16) . x_hat``, at most ``|q - q_bf16| * (1 + r)``;
* the kernel's own rounding to bfloat16, at most ``2**-7 |K| + 2**-12`` (twice the
  unit roundoff, plus an absolute term: measured errors stay below half of it).

The caller rescores in float32 the best candidates, takes the k-th exact score
``tau``, and rescores every other row whose ``K + b >= tau``: no row left out can
beat the k-th result, so the top-k equals the float32 brute force. Every
rescored row also checks the bound (``|s - K| <= b``); a violation (a kernel
that rounds differently) makes the caller fall back to the float32 scan.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from retrieval.index.embedded.int8_kernel import ROW_BLOCK, Int8Kernel, select
from retrieval.parallel import Beside, helper_threads

T = TypeVar("T")

KIND = "int8-row-bf16scale-v1"
_BLOCK = 65_536
_KERNEL_REL = 2.0**-7
_KERNEL_ABS = 2.0**-12
_SLACK = 1e-5  # float32 rounding of the "exact" rescoring itself
# From this many rows the first pass is split in two halves, the second on a helper
# thread when one is idle (retrieval/parallel.py; measured:
# docs/benchmarks.md#why-the-query-path-is-built-this-way).
SPLIT_MIN_ROWS = 32_768


def _round_up_bf16(values: np.ndarray) -> np.ndarray:
    """The smallest bfloat16-representable float32 >= each (positive, finite) value."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    up = (bits.astype(np.uint64) + 0xFFFF) & 0xFFFF0000
    return up.astype(np.uint32).view(np.float32)


def _round_up_f32(values: np.ndarray) -> np.ndarray:
    as32 = values.astype(np.float32)
    return np.where(as32.astype(np.float64) < values, np.nextafter(as32, np.float32(np.inf)), as32)


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes int8 (n, d), scale float32 (n,), residual float32 (n,))``, in blocks."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    codes = np.empty(vectors.shape, dtype=np.int8)
    scale = np.empty(n, dtype=np.float32)
    residual = np.empty(n, dtype=np.float32)
    for lo in range(0, n, _BLOCK):
        x = vectors[lo : lo + _BLOCK]
        amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
        s = _round_up_bf16(np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32))
        c = np.clip(np.rint(x / s[:, None]), -127, 127).astype(np.int8)
        diff = x.astype(np.float64) - c.astype(np.float64) * s[:, None].astype(np.float64)
        codes[lo : lo + _BLOCK] = c
        scale[lo : lo + _BLOCK] = s
        residual[lo : lo + _BLOCK] = _round_up_f32(np.linalg.norm(diff, axis=1))
    return codes, scale, residual


def torch_or_none(dimensions: int = 384) -> Any | None:
    """The torch module when its int8 kernel is verified here for ``dimensions``, else None."""
    kernel = select(dimensions)
    return kernel.torch if kernel is not None else None


@dataclass(frozen=True)
class FirstPass:
    """A first pass over a segment: its scores and its best readable rows."""

    scores: np.ndarray
    """First-pass score of every row (float32); ``-inf`` for the rows not readable."""
    best: np.ndarray
    """The ``n`` readable rows with the highest scores (fewer if fewer are readable), sorted."""
    query_error: float
    """``|q - q_used|``: how far the query the kernel used is from the query."""


@dataclass
class QuantizedVectors:
    """A segment's int8 copy (arrays usually memory-mapped) and its scoring kernel."""

    codes: np.ndarray
    scale: np.ndarray
    residual: np.ndarray
    max_residual: float = field(init=False)
    _tensors: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.max_residual = float(np.max(self.residual)) if len(self.residual) else 0.0

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dimensions(self) -> int:
        return int(self.codes.shape[1])

    def first_pass(
        self, query: np.ndarray, readable: np.ndarray, n: int, *, dense_kernel: str = "auto"
    ) -> FirstPass:
        """The first pass over the ``readable`` rows (bool mask) and its ``n`` best rows.

        ``dense_kernel``: ``auto`` (torch's kernel where verified) or ``numpy``.

        Each half of a split pass masks its scores and picks its own ``n`` best on
        the thread that scanned it, so the second core does that share too; the best
        ``n`` of the two short lists are the best ``n`` of the segment. With the
        smaller candidate count (ranking.py) it made dense search faster for the
        same top k (docs/benchmarks.md#why-the-query-path-is-built-this-way).
        """
        if readable.shape != (self.rows,) or readable.dtype != np.bool_:
            raise ValueError(f"readable must be a bool mask of {self.rows} rows")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")

        def best_of_part(scores: np.ndarray, lo: int, hi: int) -> np.ndarray:
            part = scores[lo:hi]
            np.copyto(part, -np.inf, where=~readable[lo:hi])
            if n >= hi - lo:
                return np.arange(lo, hi)
            return np.argpartition(part, hi - lo - n)[hi - lo - n :] + lo

        scores, q_err, parts = self._scan(
            query, best_of_part, select(self.dimensions, dense_kernel)
        )
        best = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(best) > n:
            best = best[np.argpartition(scores[best], len(best) - n)[len(best) - n :]]
        # A part with fewer than n readable rows lists unreadable ones too.
        best = best[np.isfinite(scores[best])]
        return FirstPass(scores=scores, best=np.sort(best), query_error=q_err)

    def _scan(
        self,
        query: np.ndarray,
        after: Callable[[np.ndarray, int, int], T],
        kernel: Int8Kernel | None,
    ) -> tuple[np.ndarray, float, list[T]]:
        """Scores of every row, in one part or two (the second on a helper thread), and
        ``|q - q_used|``, the query's rounding.

        ``after(scores, lo, hi)`` runs on the thread that scanned ``[lo, hi)``, right
        after it; its results come back in row order.
        """
        out = np.empty(self.rows, dtype=np.float32)
        if kernel is None or not kernel.accepts(self.codes):
            score_rows = self._numpy_scorer(np.asarray(query, dtype=np.float32), out)
            q_err = 0.0
        else:
            score_rows, q_err = self._torch_scorer(kernel, query, out)

        def part(lo: int, hi: int) -> T:
            score_rows(lo, hi)
            return after(out, lo, hi)

        # Each row's score is its own dot product, so halves give the same numbers; the
        # first half is whole kernel blocks, so the same rows go to numpy either way.
        split = self.rows >= SPLIT_MIN_ROWS and helper_threads()
        half = self.rows // 2 // ROW_BLOCK * ROW_BLOCK if split else self.rows
        second = Beside(part, half, self.rows) if half < self.rows else None
        results = [part(0, half)]
        if second is not None:
            results.append(second.join())
        return out, q_err, results

    def _torch_scorer(
        self, kernel: Int8Kernel, query: np.ndarray, out: np.ndarray
    ) -> tuple[Callable[[int, int], None], float]:
        codes, scale = self._torch_tensors(kernel.torch)
        q16 = kernel.query(query)
        q_used = q16[0].float().numpy()
        numpy_rows = self._numpy_scorer(q_used, out)

        def score_rows(lo: int, hi: int) -> None:
            # Whole blocks of rows only: the kernel's 1-3-row blocks are the ones that
            # crashed (int8_kernel.py); the last few rows are scored in numpy.
            full = lo + (hi - lo) // ROW_BLOCK * ROW_BLOCK
            scores = kernel.scores(q16, codes[lo:full], scale[lo:full]) if full > lo else None
            if scores is None:
                full = lo  # not a verified call: numpy scores the range
            else:
                out[lo:full] = scores
            if full < hi:
                numpy_rows(full, hi)

        q_err = float(np.linalg.norm(query.astype(np.float64) - q_used.astype(np.float64)))
        return score_rows, q_err

    def _torch_tensors(self, torch: Any) -> tuple[Any, Any]:
        if self._tensors is None:
            with warnings.catch_warnings():
                # The arrays are read-only memory maps; the kernel never writes to them.
                warnings.simplefilter("ignore", UserWarning)
                codes = torch.from_numpy(self.codes)
            scale = torch.from_numpy(np.asarray(self.scale, dtype=np.float32)).to(torch.bfloat16)
            self._tensors = (codes, scale)
        return self._tensors

    def _numpy_scorer(self, q: np.ndarray, out: np.ndarray) -> Callable[[int, int], None]:
        """Scores against ``q`` (float32): the whole pass without the kernel, or the rows
        it leaves (then ``q`` is the bfloat16 query it used, so the bound holds alike)."""

        def score_rows(lo: int, hi: int) -> None:
            for start in range(lo, hi, 16_384):
                end = min(hi, start + 16_384)
                block = self.codes[start:end].astype(np.float32)
                out[start:end] = (block @ q) * self.scale[start:end]

        return score_rows

    def error_bounds(self, approx: np.ndarray, rows: np.ndarray, q_err: float) -> np.ndarray:
        """``b`` with ``|exact - approx| <= b`` for ``rows`` (``approx`` given for those rows)."""
        r = np.asarray(self.residual[rows], dtype=np.float64)
        return (
            r * (1.0 + q_err)
            + q_err * 1.001
            + _KERNEL_REL * np.abs(approx.astype(np.float64))
            + _KERNEL_ABS
            + _SLACK
        )

    def max_error_bound(self, max_abs_approx: float, q_err: float) -> float:
        return (
            self.max_residual * (1.0 + q_err)
            + q_err * 1.001
            + _KERNEL_REL * max_abs_approx
            + _KERNEL_ABS
            + _SLACK
        )
