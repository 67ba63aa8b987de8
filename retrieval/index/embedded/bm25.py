"""BM25 variants as small pure functions over numpy arrays (after bm25s' ``scoring.py``).

Every statistic (number of documents ``N``, document frequency ``df``, average
length ``avgdl``) is computed over *live* chunks only, so a delete is reflected
exactly in the next query's scores.

* ``lucene`` (default): idf = log(1 + (N - df + 0.5) / (df + 0.5)) — Lucene's
  BM25Similarity (Robertson & Zaragoza 2009, with Lucene's +1 inside the log).
  It is always positive, so a term present in more than half of the chunks
  still counts a little instead of zero or negative, and it needs the df of the
  query's terms only — cheap and exact under incremental updates.
* ``okapi``: rank-bm25's ``BM25Okapi`` (Trotman et al. 2014 variant):
  idf = log(N - df + 0.5) - log(df + 0.5), with negative idfs replaced by
  ``epsilon * average_idf``, where ``average_idf`` is the mean raw idf over every
  term of the live corpus. That mean needs every term's df; the index computes
  it once per committed generation (cached), so this variant is exact but its
  first query after a write costs a pass over the vocabulary. It exists to pin
  Trove's BM25 against the reference implementation.

Both use the same term-frequency saturation tf*(k1+1) / (tf + k1*(1 - b + b*dl/avgdl)).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Bm25Variant(StrEnum):
    LUCENE = "lucene"
    OKAPI = "okapi"

    @classmethod
    def from_str(cls, value: str) -> Bm25Variant:
        try:
            return cls(value.strip().lower())
        except ValueError:
            valid = ", ".join(v.value for v in cls)
            raise ValueError(f"unknown BM25 variant {value!r} (valid: {valid})") from None


@dataclass(frozen=True)
class Bm25Params:
    """Scoring parameters; query-time only, nothing about them is stored in the index."""

    variant: Bm25Variant = Bm25Variant.LUCENE
    k1: float = 1.2
    b: float = 0.75
    epsilon: float = 0.25  # okapi only: the idf floor as a fraction of the average idf

    def __post_init__(self) -> None:
        if self.k1 < 0:
            raise ValueError(f"BM25 k1 must be >= 0, got {self.k1}")
        if not 0.0 <= self.b <= 1.0:
            raise ValueError(f"BM25 b must be within [0, 1], got {self.b}")

    @classmethod
    def okapi(cls, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> Bm25Params:
        """rank-bm25 ``BM25Okapi`` defaults."""
        return cls(variant=Bm25Variant.OKAPI, k1=k1, b=b, epsilon=epsilon)


def idf_lucene(n_docs: int, df: np.ndarray) -> np.ndarray:
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def idf_okapi_raw(n_docs: int, df: np.ndarray) -> np.ndarray:
    # Written exactly as rank-bm25 does (difference of logs), so scores agree to the last bit
    # more often and tie order is comparable.
    df = np.asarray(df, dtype=np.float64)
    return np.log(n_docs - df + 0.5) - np.log(df + 0.5)


def idf_okapi(n_docs: int, df: np.ndarray, average_idf: float, epsilon: float) -> np.ndarray:
    raw = idf_okapi_raw(n_docs, df)
    return np.where(raw < 0, epsilon * average_idf, raw)


def length_norm(doc_len: np.ndarray, avgdl: float, k1: float, b: float) -> np.ndarray:
    """``k1 * (1 - b + b * dl / avgdl)`` per row: the part of saturation fixed per generation."""
    return k1 * (1.0 - b + b * np.asarray(doc_len, dtype=np.float64) / avgdl)


def weighted_saturation(tf: np.ndarray, norm: np.ndarray, k1: float, weight: float) -> np.ndarray:
    """``weight * tf * (k1 + 1) / (tf + norm)`` per posting, in float64.

    Written in place with two temporaries (the plain expression makes five):
    every lexical path scores through this one function, so a row's score is
    bit-identical whichever path computed it.
    """
    out = np.array(tf, dtype=np.float64)  # always a copy: it is written below
    denominator = out + norm
    out *= k1 + 1.0
    out /= denominator
    out *= weight
    return out
