"""Parsing in a pool of worker processes: the same results as one worker, timeouts and
crashes still cost one document each, and a hanging document holds only its own worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.acl_policy import AclPolicy
from pipelines import progress
from pipelines.config import LimitsConfig, SourceConfig
from pipelines.parse_worker import GuardedParser, ParseWorker, default_workers, make_parse_fn
from pipelines.stages import StageResult, parse_pending, scan_source
from pipelines.store import StagingStore
from tests.pipelines import hostile_files as hostile
from tests.pipelines.test_parse_worker import _doc

HOOKS = "tests.pipelines.hostile_files"


class _Source:
    """A folder of documents scanned into a fresh staging store per run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.runs = 0

    def config(self) -> SourceConfig:
        return SourceConfig.model_validate(
            {"name": "docs", "path": str(self.root), "acl": {"default": {"allow_groups": ["a"]}}}
        )

    def staged(self) -> StagingStore:
        self.runs += 1
        store = StagingStore(self.root.parent / f"staging-{self.runs}.sqlite")
        config = self.config()
        scan_source(config, store, AclPolicy.from_config(config.acl))
        return store


def _outcome(store: StagingStore, result: StageResult) -> dict[str, Any]:
    """Everything parse_pending leaves behind, minus timestamps."""
    manifest_ids = sorted(row.doc_id for row in store.pending())
    return {
        "counts": result.counts,
        "failures": [f.to_dict() for f in result.failures],
        "counter": store.counter("run.parse"),
        "recorded": [
            {k: v for k, v in f.to_dict().items() if k not in ("first_seen", "last_seen")}
            for f in store.failures()
        ],
        "pending": manifest_ids,
        "parsed": {doc_id: store.get_parsed(doc_id) for doc_id in manifest_ids},
    }


def _run(source: _Source, parse: Callable[..., Any]) -> dict[str, Any]:
    store = source.staged()
    try:
        return _outcome(store, parse_pending(store, parse))
    finally:
        store.close()


class _Clock:
    """A progress sink that notes when each document finished."""

    def __init__(self) -> None:
        self.done: list[float] = []
        self._lock = threading.Lock()

    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, task: str, amount: int = 1) -> None:
        with self._lock:
            self.done.append(time.perf_counter())

    def finish(self, task: str) -> None:
        pass


@pytest.fixture
def clock() -> Iterator[_Clock]:
    sink = _Clock()
    progress.set_sink(sink)
    try:
        yield sink
    finally:
        progress.set_sink(None)


def test_default_is_one_worker_per_core(monkeypatch):
    assert default_workers() >= 1
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert default_workers() == 6
    assert make_parse_fn(LimitsConfig()).concurrency == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_workers() == 1
    with pytest.raises(ValueError, match="at least 1"):
        make_parse_fn(LimitsConfig(), workers=0)
    with pytest.raises(ValueError, match="not both"):
        GuardedParser(LimitsConfig(), ParseWorker(), workers=[ParseWorker()])


def test_two_workers_give_exactly_the_results_of_one(tmp_path):
    source = _Source(tmp_path / "docs")
    hostile.make_docx(source.root)
    hostile.make_pdf(source.root)
    hostile.make_utf16_text(source.root)
    hostile.make_cp1252_text(source.root)
    hostile.make_text(
        source.root, "guide.md", "---\ntitle: Guide\n---\n# Start\n\nRead me first.\n"
    )
    hostile.make_text(source.root, "page.html", "<title>Page</title><h1>Hello</h1><p>A page.</p>")
    hostile.make_empty(source.root, "empty.txt")
    hostile.make_whitespace(source.root, "blank.md")
    hostile.make_noise(source.root, "noise.pdf")
    hostile.make_truncated_pdf(source.root)
    hostile.make_encrypted_pdf(source.root)
    with make_parse_fn(LimitsConfig(), workers=1) as one:
        sequential = _run(source, one)
    with make_parse_fn(LimitsConfig(), workers=2) as two:
        pooled = _run(source, two)
        assert sum(w.starts for w in two.workers) == 2  # both used, neither restarted
    assert pooled == sequential
    assert sequential["counts"] == {"documents_parsed": 6, "documents_failed": 5}
    assert [f["reason_class"] for f in sequential["failures"]] == [
        "empty",  # blank.md
        "empty",  # empty.txt
        "encrypted",
        "type_mismatch",  # noise.pdf
        "malformed",  # truncated.pdf
    ]


def test_a_hanging_document_holds_one_worker_while_the_other_parses_the_rest(tmp_path, clock):
    source = _Source(tmp_path / "docs")
    hostile.make_text(source.root, "a-slow.txt", "never parsed")  # first in document order
    for i in range(4):
        hostile.make_text(source.root, f"good-{i}.txt", f"Document number {i} parses fine.")
    timeout_s = 10.0
    limits = LimitsConfig(timeout_s=timeout_s)
    with GuardedParser(
        limits, workers=[ParseWorker(f"{HOOKS}:slow_parse") for _ in range(2)]
    ) as pool:
        for worker in pool.workers:
            worker.start()  # start-up (importing unstructured) is not what is measured
        started = time.perf_counter()
        outcome = _run(source, pool)
        elapsed = [t - started for t in clock.done]
        assert outcome["counts"] == {"documents_parsed": 4, "documents_failed": 1}
        [failure] = outcome["failures"]
        assert failure["path"] == "a-slow.txt" and failure["reason_class"] == "timeout"
        assert "limits.timeout_s" in failure["reason"]
        # The four good documents finished while the slow one still held its worker;
        # one at a time they would all have waited for its timeout.
        assert len(elapsed) == 5
        assert max(elapsed[:4]) < timeout_s - 1
        assert elapsed[4] >= timeout_s
        # The killed worker's next document gets a fresh process.
        assert sum(w.starts for w in pool.workers) == 2
        again = hostile.make_text(tmp_path, "again.txt", "Parsed by a fresh process.")
        for _ in range(2):
            assert "fresh process" in pool(_doc(again)).text
        assert sum(w.starts for w in pool.workers) == 3


def _alone_and_pooled(source: _Source, target: str) -> tuple[dict, dict, tuple[ParseWorker, ...]]:
    """The same documents through one worker and through a pool of two running ``target``;
    returns both outcomes and the pool's workers (stopped)."""
    limits = LimitsConfig()
    with GuardedParser(limits, ParseWorker(target)) as one:
        sequential = _run(source, one)
    with GuardedParser(limits, workers=[ParseWorker(target) for _ in range(2)]) as two:
        pooled = _run(source, two)
    return sequential, pooled, two.workers


def test_a_crash_costs_one_document_and_matches_the_sequential_run(tmp_path):
    source = _Source(tmp_path / "docs")
    hostile.make_text(source.root, "b-crash.txt", "boom")
    for i in range(5):
        hostile.make_text(source.root, f"{'a' if i < 2 else 'c'}-good-{i}.txt", f"Fine text {i}.")
    sequential, pooled, workers = _alone_and_pooled(source, f"{HOOKS}:crashing_parse")
    # Each worker that took a document started once; the crashed one restarts
    # only if it takes another document. Which worker takes what depends on
    # timing (idle workers are reused last in, first out), so: one crash, at
    # most one restart.
    used = sum(1 for w in workers if w.starts)
    assert used >= 1
    assert used <= sum(w.starts for w in workers) <= used + 1
    assert pooled == sequential
    [failure] = pooled["failures"]
    assert failure["path"] == "b-crash.txt" and failure["reason_class"] == "parser_crash"
    assert "exit code 1" in failure["reason"]
    assert pooled["counts"] == {"documents_parsed": 5, "documents_failed": 1}


def test_a_parser_bug_in_every_worker_fails_each_document_alike(tmp_path):
    source = _Source(tmp_path / "docs")
    for name in ("x.txt", "y.txt", "z.txt"):
        hostile.make_text(source.root, name, "text")
    sequential, pooled, _ = _alone_and_pooled(source, f"{HOOKS}:raising_parse")
    assert pooled == sequential
    assert [f["path"] for f in pooled["failures"]] == ["x.txt", "y.txt", "z.txt"]
    assert {f["reason_class"] for f in pooled["failures"]} == {"parser_crash"}


def test_fewer_documents_than_workers_start_no_idle_processes(tmp_path):
    source = _Source(tmp_path / "docs")
    hostile.make_text(source.root, "only.txt", "A single document.")
    with make_parse_fn(LimitsConfig(), workers=3) as pool:
        outcome = _run(source, pool)
        assert outcome["counts"] == {"documents_parsed": 1, "documents_failed": 0}
        assert [w.starts for w in pool.workers] == [1, 0, 0]


def test_plain_functions_are_still_called_one_at_a_time_in_document_order(tmp_path):
    source = _Source(tmp_path / "docs")
    for name in ("c.txt", "a.txt", "b.txt"):
        hostile.make_text(source.root, name, "text")
    seen: list[str] = []
    threads: set[int] = set()

    def parse(doc):
        from pipelines.parse import parse_document

        seen.append(doc.path)
        threads.add(threading.get_ident())
        return parse_document(doc)

    outcome = _run(source, parse)
    assert outcome["counts"] == {"documents_parsed": 3, "documents_failed": 0}
    assert seen == ["a.txt", "b.txt", "c.txt"]
    assert threads == {threading.get_ident()}
