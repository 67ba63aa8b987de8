"""Builders for index tests: records with random unit vectors, no model needed."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from core.acl import Acl
from retrieval.index.base import ChunkRecord

DIM = 16


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def record(
    doc_id: str,
    ord_: int,
    text: str,
    acl: Acl,
    *,
    rng: np.random.Generator | None = None,
    vector: np.ndarray | None = None,
    source: str = "handbook",
    doc_type: str = "md",
    path: str | None = None,
    modified_at: datetime | None = datetime(2024, 5, 1, tzinfo=UTC),
    version: str = "v1",
) -> ChunkRecord:
    if vector is None:
        vector = unit(rng or np.random.default_rng(abs(hash((doc_id, ord_))) % 2**32))
    return ChunkRecord(
        chunk_id=f"{doc_id}#{ord_}",
        doc_id=doc_id,
        source=source,
        ord=ord_,
        text=text,
        title=f"Title of {doc_id}",
        uri=f"file:///corpus/{doc_id}",
        path=path if path is not None else f"{doc_id}.md",
        section=("Intro", f"Part {ord_}"),
        pages=(ord_ + 1,),
        char_start=ord_ * 100,
        char_end=ord_ * 100 + len(text),
        doc_version=version,
        doc_type=doc_type,
        modified_at=modified_at,
        acl=acl,
        vector=vector,
    )


def doc_records(
    doc_id: str, texts: list[str], acl: Acl, rng: np.random.Generator, **kwargs
) -> list[ChunkRecord]:
    return [record(doc_id, i, t, acl, rng=rng, **kwargs) for i, t in enumerate(texts)]


WORDS = [
    "travel",
    "leave",
    "policy",
    "hotel",
    "per",
    "diem",
    "expense",
    "receipt",
    "manager",
    "approval",
    "security",
    "laptop",
    "password",
    "hiring",
    "interview",
    "onboarding",
    "benefit",
    "payroll",
    "holiday",
    "remote",
    "office",
    "badge",
    "contract",
    "vendor",
    "budget",
    "report",
    "meeting",
    "training",
    "review",
    "promotion",
    "salary",
    "team",
    "project",
    "deadline",
    "invoice",
    "audit",
    "compliance",
    "privacy",
    "incident",
    "access",
    "account",
    "network",
    "printer",
]


def random_text(rng: np.random.Generator, n_words: int | None = None) -> str:
    n = n_words if n_words is not None else int(rng.integers(3, 40))
    # Zipf-ish: earlier words more frequent, so document frequencies vary widely.
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return " ".join(rng.choice(WORDS, size=n, p=p))


def assert_same_ranking(got, expected_ids, expected_scores, score_of) -> None:
    """``got`` (ScoredIds) equals a reference top-k: same scores in order, each returned id's
    reference score (``score_of``) equal to the score at its rank, and the same id wherever
    that score is not tied (tied ids may come in any order, also across the top-k boundary)."""
    expected_scores = np.asarray(expected_scores, dtype=np.float64)
    assert [h.chunk_id for h in got] == list(dict.fromkeys(h.chunk_id for h in got))
    assert len(got) == len(expected_ids)
    np.testing.assert_allclose([h.score for h in got], expected_scores, rtol=1e-6, atol=1e-9)
    for i, h in enumerate(got):
        assert np.isclose(score_of[h.chunk_id], expected_scores[i], rtol=1e-6, atol=1e-9)
        tied = np.isclose(expected_scores, expected_scores[i], rtol=1e-6, atol=1e-9)
        if tied.sum() == 1 and i + 1 < len(expected_ids):
            assert h.chunk_id == expected_ids[i], f"rank {i}: {h.chunk_id} != {expected_ids[i]}"
