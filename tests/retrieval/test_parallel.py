"""retrieval.parallel: a step runs on an idle core, or inline when none is free, and a
split first pass or an overlapped hybrid search gives exactly the same answer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retrieval import parallel
from retrieval.index.embedded import quantized
from retrieval.index.embedded.quantized import QuantizedVectors, quantize
from retrieval.parallel import Beside, serving

needs_two_cores = pytest.mark.skipif(
    parallel.helper_threads() == 0, reason="one core: every step runs inline"
)


def _thread_name() -> str:
    return threading.current_thread().name


@needs_two_cores
def test_a_step_runs_on_a_helper_thread_and_returns_its_result():
    started = threading.Event()

    def step() -> str:
        started.set()
        return _thread_name()

    running = Beside(step)
    assert started.wait(10)  # what the caller does meanwhile takes this long
    assert running.join().startswith("trove-query-helper")
    assert running.ran_beside


def test_a_steps_exception_is_raised_by_join():
    def fail() -> None:
        raise ValueError("bad filter")

    step = Beside(fail)
    with pytest.raises(ValueError, match="bad filter"):
        step.join()


@needs_two_cores
def test_a_step_runs_inline_when_every_helper_is_busy():
    release = threading.Event()
    blockers = [Beside(release.wait, 10) for _ in range(parallel.helper_threads())]
    calls = []

    def step() -> str:
        calls.append(1)
        return _thread_name()

    try:
        queued = Beside(step)
        assert queued.join() == threading.current_thread().name
        assert not queued.ran_beside
    finally:
        release.set()
        for blocker in blockers:
            blocker.join()
    assert calls == [1]  # cancelled on the helper, run once here


def test_no_helper_while_every_core_serves_a_query(monkeypatch):
    monkeypatch.setattr(parallel, "_active", 10**6)
    assert Beside(_thread_name).join() == threading.current_thread().name


def test_serving_counts_a_thread_once_and_restores_the_count():
    before = parallel.queries_in_flight()
    with serving(), serving():
        assert parallel.queries_in_flight() == before + 1
    assert parallel.queries_in_flight() == before


def test_split_first_pass_equals_the_single_pass(monkeypatch):
    if quantized.torch_or_none() is None:
        pytest.skip("torch's int8 kernel is not available here")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5001, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[17] + rng.normal(scale=0.2, size=384).astype(np.float32)
    q /= np.linalg.norm(q)
    qv = QuantizedVectors(*quantize(x))
    monkeypatch.setattr(quantized, "SPLIT_MIN_ROWS", 10**9)
    everything = np.ones(qv.rows, dtype=bool)
    whole = qv.first_pass(q, everything, 10)
    monkeypatch.setattr(quantized, "SPLIT_MIN_ROWS", 1000)
    halves = qv.first_pass(q, everything, 10)
    np.testing.assert_array_equal(halves.scores, whole.scores)
    assert halves.query_error == whole.query_error


@pytest.mark.parametrize("share", [0.005, 0.3, 1.0])
def test_split_first_pass_picks_the_same_rows(monkeypatch, share):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(6001, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[5] + rng.normal(scale=0.2, size=384).astype(np.float32)
    q /= np.linalg.norm(q)
    readable = rng.random(len(x)) < share
    qv = QuantizedVectors(*quantize(x))
    monkeypatch.setattr(quantized, "SPLIT_MIN_ROWS", 10**9)
    whole = qv.first_pass(q, readable, 64)
    monkeypatch.setattr(quantized, "SPLIT_MIN_ROWS", 1000)
    halves = qv.first_pass(q, readable, 64)
    np.testing.assert_array_equal(halves.scores, whole.scores)
    # Random normal rows: no ties among the 64 best, so the same rows exactly.
    np.testing.assert_array_equal(halves.best, whole.best)
    assert len(whole.best) == min(64, int(readable.sum()))
