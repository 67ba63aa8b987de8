"""Micro timing of the embedded index at 50k rows (384 dims): printed, never asserted.

Run with ``pytest -m slow tests/retrieval/test_timing.py -s``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.index.base import ChunkRecord, WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from tests.retrieval.builders import random_text

ROWS = 50_000
DIM = 384


@pytest.mark.slow
def test_print_query_timings(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    groups = [f"g{i}" for i in range(100)]
    records = [
        ChunkRecord(
            chunk_id=f"d{i // 4}#{i % 4}", doc_id=f"d{i // 4}", source="s", ord=i % 4,
            text=random_text(rng, 60), title="t", uri="u", path="p", section=(), pages=(),
            char_start=0, char_end=1, doc_version="v", doc_type="md", modified_at=None,
            acl=Acl(allow_groups=frozenset({groups[(i // 4) % 100]})), vector=vectors[i],
        )
        for i in range(ROWS)
    ]  # fmt: skip
    ix = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    t0 = time.perf_counter()
    for start in range(0, ROWS, 10_000):
        ix.apply(WriteBatch(upserts=records[start : start + 10_000]))
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    reopened = EmbeddedIndex.open(tmp_path / "ix")
    open_s = time.perf_counter() - t0
    principals = {
        "1% readable": Principal.of("u", ["g1"]),
        "50% readable": Principal.of("u", groups[:50]),
    }
    queries = ["travel hotel receipt", "audit compliance", "printer network access", "leave"]
    for name, principal in principals.items():
        for label, run in (
            ("lexical", lambda q, p=principal: reopened.search_lexical(q, p, 50)),
            ("dense", lambda q, p=principal: reopened.search_dense(rng.normal(size=DIM), p, 50)),
        ):
            run(queries[0])  # warm the mask cache and page in the files
            times = []
            for i in range(40):
                t = time.perf_counter()
                run(queries[i % len(queries)])
                times.append((time.perf_counter() - t) * 1000)
            print(
                f"\n{ROWS} rows, {name}, {label}: p50 {np.percentile(times, 50):.2f} ms, "
                f"p95 {np.percentile(times, 95):.2f} ms"
            )
    print(f"\nbuild {build:.1f} s in 5 batches, open {open_s * 1000:.0f} ms, "
          f"segments {len(reopened._snap().views)}, {reopened.stats()}")  # fmt: skip
