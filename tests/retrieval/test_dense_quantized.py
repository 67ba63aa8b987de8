"""The int8 first pass (quantized.py) never changes a dense answer: top-k equals float32
brute force over the readable rows, also for near-duplicate vectors.

Every exactness test runs twice: with torch's kernel (where a child process verified
it here, int8_kernel.py; skipped with the verdict's reason elsewhere) and with the
numpy first pass that ``dense_kernel="numpy"`` forces."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval import parallel
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex, int8_kernel, ranking
from retrieval.index.embedded.quantized import QuantizedVectors, quantize
from tests.retrieval.builders import assert_same_ranking, record

DIM = 384
K = 10
READER = Principal.of("reader", ["staff"])


def _clustered(rng: np.random.Generator, n: int, centres: int, noise: float) -> np.ndarray:
    """Groups of near-duplicates (like replicated chunks): the hard case for a first pass."""
    base = rng.normal(size=(centres, DIM)).astype(np.float32)
    x = base[rng.integers(0, centres, n)] + rng.normal(scale=noise, size=(n, DIM)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass
class Kernel:
    """The first pass a test runs with, and the kernel calls it made."""

    name: str
    setting: str
    calls: list[int] = field(default_factory=list)

    def check_it_ran(self) -> None:
        if self.name == "torch":
            assert self.calls, "torch's kernel never ran"
            assert all(rows % int8_kernel.ROW_BLOCK == 0 for rows in self.calls)
        else:
            assert self.calls == [], "the numpy first pass called torch's kernel"


@pytest.fixture(params=["torch", "numpy"])
def kernel(request, monkeypatch) -> Kernel:
    if request.param == "torch" and int8_kernel.select(DIM) is None:
        verdict = int8_kernel.last_verdict(DIM)
        pytest.skip(f"torch's int8 kernel is not verified here: {verdict and verdict.reason}")
    chosen = Kernel(request.param, "auto" if request.param == "torch" else "numpy")
    original = int8_kernel.Int8Kernel.scores

    def counted(self, q16, codes, scale):
        chosen.calls.append(int(codes.shape[0]))
        return original(self, q16, codes, scale)

    monkeypatch.setattr(int8_kernel.Int8Kernel, "scores", counted)
    return chosen


def _all_scores(qv: QuantizedVectors, q: np.ndarray, setting: str) -> tuple[np.ndarray, float]:
    """First-pass scores of every row (all readable) and the query's rounding."""
    first = qv.first_pass(q, np.ones(qv.rows, dtype=bool), 1, dense_kernel=setting)
    return first.scores, first.query_error


def test_first_pass_error_stays_within_its_bound(kernel):
    rng = np.random.default_rng(3)
    x = _clustered(rng, 4001, 40, 0.05)  # 4001: the last row is scored outside the kernel
    qv = QuantizedVectors(*quantize(x))
    assert qv.codes.dtype == np.int8 and np.all(np.abs(qv.codes) <= 127)
    rows = np.arange(len(x))
    for i in range(20):
        q = x[i * 97] + rng.normal(scale=0.1, size=DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        approx, q_err = _all_scores(qv, q, kernel.setting)
        assert (q_err > 0) == (kernel.name == "torch")  # the bfloat16 query, or none
        exact = x.astype(np.float64) @ q.astype(np.float64)
        bound = qv.error_bounds(approx, rows, q_err)
        assert np.all(np.abs(exact - approx) <= bound)
        # The bound is useful: far below the spread of the scores.
        assert float(np.median(bound)) < 0.05
    kernel.check_it_ran()


@pytest.mark.parametrize("share", [0.01, 0.5, 1.0])
def test_first_pass_picks_the_best_readable_rows(share, kernel):
    rng = np.random.default_rng(5)
    x = _clustered(rng, 3000, 30, 0.05)
    qv = QuantizedVectors(*quantize(x))
    readable = rng.random(len(x)) < share
    q = x[40] + rng.normal(scale=0.1, size=DIM).astype(np.float32)
    q /= np.linalg.norm(q)
    approx, q_err = _all_scores(qv, q, kernel.setting)
    first = qv.first_pass(q, readable, 64, dense_kernel=kernel.setting)
    assert first.query_error == q_err
    np.testing.assert_array_equal(first.scores[readable], approx[readable])
    assert np.all(first.scores[~readable] == -np.inf)
    n = min(64, int(readable.sum()))
    assert len(first.best) == n and np.all(np.diff(first.best) > 0)
    assert np.all(readable[first.best])
    # Nothing left out scores above the lowest row picked.
    others = np.setdiff1d(np.flatnonzero(readable), first.best)
    if len(others):
        assert approx[others].max() <= approx[first.best].min()
    kernel.check_it_ran()


def test_first_pass_refuses_a_mask_of_another_shape():
    x = _clustered(np.random.default_rng(6), 100, 2, 0.1)
    qv = QuantizedVectors(*quantize(x))
    with pytest.raises(ValueError, match="bool mask of 100 rows"):
        qv.first_pass(x[0], np.ones(99, dtype=bool), 10)
    with pytest.raises(ValueError, match="n must be"):
        qv.first_pass(x[0], np.ones(100, dtype=bool), 0)


def test_residual_is_the_true_quantisation_error():
    rng = np.random.default_rng(4)
    x = _clustered(rng, 500, 5, 0.2)
    codes, scale, residual = quantize(x)
    recon = codes.astype(np.float64) * scale[:, None].astype(np.float64)
    true = np.linalg.norm(x.astype(np.float64) - recon, axis=1)
    assert np.all(residual >= true)
    np.testing.assert_allclose(residual, true, rtol=1e-6)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    rng = np.random.default_rng(7)
    n_docs, per_doc = 1500, 4
    vectors = _clustered(rng, n_docs * per_doc, 60, 0.02)
    records = []
    for d in range(n_docs):
        r = rng.random()
        acl = (
            Acl(allow_groups=frozenset({"staff"}))
            if r < 0.45
            else Acl(allow_groups=frozenset({"staff"}), deny_users=frozenset({"reader"}))
            if r < 0.5
            else Acl(allow_groups=frozenset({"other"}))
        )
        for c in range(per_doc):
            records.append(record(f"d{d:05d}", c, "text", acl, vector=vectors[len(records)]))
    ix = EmbeddedIndex.open(tmp_path_factory.mktemp("q8") / "ix", create=True, dimensions=DIM)
    half = len(records) // 2
    ix.apply(WriteBatch(upserts=records[:half]))
    ix.apply(WriteBatch(upserts=records[half:], delete_docs={"d00003", "d00010"}))
    live = [r for r in records if r.doc_id not in {"d00003", "d00010"}]
    yield ix, live
    ix.close()


@pytest.fixture
def quantized_everywhere(monkeypatch):
    """Take the int8 path on small segments too, and count that it ran."""
    monkeypatch.setattr(ranking, "QUANTIZED_MIN_ROWS", 0)
    calls = []
    original = QuantizedVectors.first_pass

    def spy(self, query, readable, n, **options):
        calls.append(self.rows)
        return original(self, query, readable, n, **options)

    monkeypatch.setattr(QuantizedVectors, "first_pass", spy)
    return calls


@pytest.mark.parametrize("k", [1, K, 50])
def test_quantized_dense_top_k_equals_brute_force(
    index, quantized_everywhere, k, kernel, monkeypatch
):
    """Exact with torch's int8 kernel and with the numpy pass used where torch is not."""
    ix, live = index
    monkeypatch.setattr(ix, "dense_kernel", kernel.setting)
    readable = [r for r in live if r.acl.permits(READER)]
    assert 0.35 * len(live) < len(readable) < 0.55 * len(live)
    mat = np.stack([r.vector for r in readable]).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    rng = np.random.default_rng(k)
    fallbacks = ranking.quantized_fallbacks
    for i in range(15):
        # Queries near a cluster: dozens of near-ties at the top.
        q = mat[i * 131] + rng.normal(scale=0.05, size=DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        scores = mat @ q
        order = np.argsort(-scores, kind="stable")[:k]
        got = ix.search_dense(q, READER, k)
        score_of = {r.chunk_id: float(s) for r, s in zip(readable, scores, strict=True)}
        assert_same_ranking(got, [readable[j].chunk_id for j in order], scores[order], score_of)
    assert len(quantized_everywhere) >= 15  # the int8 pass really ran
    assert ranking.quantized_fallbacks == fallbacks
    kernel.check_it_ran()


def _one_segment(tmp_path, rng, n: int, centres: int):
    """An index of one segment: ``n`` clustered vectors, one chunk per document."""
    vectors = _clustered(rng, n, centres, 0.05)
    acl = Acl(allow_groups=frozenset({"staff"}))
    records = [record(f"d{i}", 0, "t", acl, vector=v) for i, v in enumerate(vectors)]
    path = tmp_path / "ix"
    with EmbeddedIndex.open(path, create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=records))
    return path, vectors


def test_segments_without_int8_files_are_quantised_in_memory(
    tmp_path, quantized_everywhere, kernel
):
    """Indexes written before the int8 copy existed keep working, with the same answers."""
    path, vectors = _one_segment(tmp_path, np.random.default_rng(9), 800, 10)
    (seg_dir,) = (path / "segments").iterdir()
    for name in ("q8_codes.npy", "q8_scale.npy", "q8_residual.npy"):
        (seg_dir / name).unlink()
    header = json.loads((seg_dir / "header.json").read_text())
    del header["quantized"]
    (seg_dir / "header.json").write_text(json.dumps(header))
    q = vectors[5]
    with EmbeddedIndex.open(path, dense_kernel=kernel.setting) as ix:
        got = ix.search_dense(q, READER, 5)
    expected = np.argsort(-(vectors @ q), kind="stable")[:5]
    assert [h.chunk_id for h in got] == [f"d{i}#0" for i in expected]
    assert quantized_everywhere == [800]
    kernel.check_it_ran()


@pytest.mark.parametrize("setting", ["auto", "numpy"])
def test_warm_up_loads_the_int8_copies_and_kernel_only_where_used(tmp_path, monkeypatch, setting):
    """A server's start-up loads what its first dense search needs (the kernel's verdict
    too, once per process), nothing for an index whose segments are all scanned in
    float32, and no kernel at all with the numpy first pass."""
    path, _ = _one_segment(tmp_path, np.random.default_rng(10), 300, 5)
    asked = []

    def verdict_for(dimensions, **_):
        asked.append(dimensions)
        return int8_kernel.Verdict(False, "not asked in this test", cacheable=False)

    monkeypatch.setattr(int8_kernel, "_kernels", {})
    monkeypatch.setattr(int8_kernel, "_verdicts", {})
    monkeypatch.setattr(int8_kernel, "verdict_for", verdict_for)
    with EmbeddedIndex.open(path, dense_kernel=setting) as ix:
        (view,) = ix._snap().views
        ix.warm_up()  # 300 rows: below the int8 path's size
        assert asked == [] and view.segment._quantized is None
        monkeypatch.setattr(ranking, "QUANTIZED_MIN_ROWS", 100)
        ix.warm_up()
        assert view.segment._quantized is not None
        assert asked == ([DIM] if setting == "auto" else [])
        ix.warm_up()
        assert asked == ([DIM] if setting == "auto" else [])  # asked once per process


def _fake_kernel(torch, shapes: list[tuple[int, int]]) -> int8_kernel.Int8Kernel:
    """An Int8Kernel whose op records each call and computes in float32 (no private op)."""

    def op(q16, codes, scale):
        shapes.append((int(codes.shape[0]), codes.data_ptr() % 64))
        return ((q16.float() @ codes.float().T) * scale.float()).to(torch.bfloat16)

    return int8_kernel.Int8Kernel(torch=torch, op=op, dimensions=DIM)


@pytest.mark.parametrize("offset", [0, 8])
def test_the_kernel_only_sees_verified_shapes(monkeypatch, offset):
    """Whole blocks of 4 rows of 16-byte-aligned codes, in both halves of a split pass;
    the rows left over, or codes that are not aligned, are scored in numpy, exactly as
    well. Codes 8 bytes past an alignment with 1-3 rows crashed the AVX-512 kernel."""
    torch = pytest.importorskip("torch")
    from retrieval.index.embedded import quantized

    rng = np.random.default_rng(14)
    x = _clustered(rng, 2003, 20, 0.05)
    codes, scale, residual = quantize(x)
    buf = np.empty(codes.size + 128, dtype=np.int8)
    start = (-buf.ctypes.data) % 64 + offset
    placed = buf[start : start + codes.size].reshape(codes.shape)
    placed[...] = codes
    qv = QuantizedVectors(placed, scale, residual)
    shapes: list[tuple[int, int]] = []
    monkeypatch.setitem(int8_kernel._kernels, DIM, _fake_kernel(torch, shapes))
    monkeypatch.setattr(quantized, "SPLIT_MIN_ROWS", 1000)
    q = x[3] + rng.normal(scale=0.1, size=DIM).astype(np.float32)
    q /= np.linalg.norm(q)
    first = qv.first_pass(q, np.ones(len(x), dtype=bool), 10)
    if offset == 0:
        # Two halves of 1000 and 1003 rows (one pass where no helper thread exists): the
        # kernel scores 1000 + 1000 rows, numpy the last 3.
        expected = [1000, 1000] if parallel.helper_threads() else [2000]
        assert sorted(rows for rows, _ in shapes) == expected
        assert all(align % 16 == 0 for _, align in shapes)
        assert first.query_error > 0
    else:
        assert shapes == [] and first.query_error == 0.0
    exact = x.astype(np.float64) @ q.astype(np.float64)
    bound = qv.error_bounds(first.scores, np.arange(len(x)), first.query_error)
    assert np.all(np.abs(exact - first.scores) <= bound)


def test_an_unverified_call_is_scored_in_numpy():
    """The guard itself: a call outside the verified class never reaches the op."""
    torch = pytest.importorskip("torch")
    shapes: list[tuple[int, int]] = []
    kernel = _fake_kernel(torch, shapes)
    codes = torch.zeros((8, DIM), dtype=torch.int8)
    scale = torch.ones(8, dtype=torch.bfloat16)
    q16 = kernel.query(np.ones(DIM, dtype=np.float32))
    assert kernel.scores(q16, codes[:6], scale[:6]) is None  # not whole blocks of 4
    assert kernel.scores(q16, codes[:, :8].contiguous(), scale) is None  # other dimension
    assert kernel.scores(q16.repeat(2, 1), codes, scale) is None  # two query rows
    assert kernel.scores(q16, codes, scale.float()) is None  # float32 scales
    assert shapes == []
    assert kernel.scores(q16, codes, scale) is not None
    assert shapes == [(8, 0)]
