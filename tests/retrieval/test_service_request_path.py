"""The service's request path: one record read per passage (the searcher's, ACL-checked),
and at most ``max_concurrent_searches`` searches in flight."""

from __future__ import annotations

import threading
import time

import pytest

from core.acl import Principal
from retrieval.search import Searcher
from retrieval.service import RetrievalService
from tests.retrieval.api.helpers import HashEncoder, build_index, make_service

ALICE = Principal.of("alice", ["staff"])
NOBODY = Principal.of("mallory", ["contractors"])
QUERIES = ("leave days paid parental sick carry", "travel per diem", "security incident")


def test_each_returned_record_is_read_once_and_the_results_stay_the_same(tmp_path, monkeypatch):
    service = make_service(tmp_path / "counted")
    plain = make_service(tmp_path / "plain")
    asked: list[str] = []
    read = service.index.get_chunks

    def counted(chunk_ids):
        asked.extend(chunk_ids)
        return read(chunk_ids)

    monkeypatch.setattr(service.index, "get_chunks", counted)
    try:
        for query in QUERIES:
            asked.clear()
            outcome = service.search(ALICE, query, top_k=8)
            assert outcome.results
            # The searcher reads each candidate's record once (in windows); the service
            # builds its results from those records, reading none a second time.
            assert asked and len(asked) == len(set(asked))
            expected = plain.search(ALICE, query, top_k=8)
            assert [(r.chunk_ids, r.score, r.deep_link, r.risk) for r in outcome.results] == [
                (r.chunk_ids, r.score, r.deep_link, r.risk) for r in expected.results
            ]
    finally:
        service.close()
        plain.close()


def test_records_handed_over_are_only_those_that_passed_the_acl_check(tmp_path):
    service = make_service(tmp_path)
    try:
        for who in (ALICE, NOBODY):
            passages, ranked = service.searcher.search_ranked(QUERIES[0], who, 24)
            assert set(ranked.records) == {p.chunk_id for p in passages}
            assert all(r.acl.permits(who) for r in ranked.records.values())
        assert not service.search(NOBODY, QUERIES[0], top_k=8).results
    finally:
        service.close()


class SlowSearcher(Searcher):
    """Records how many searches run at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def search_ranked(self, *args, **kwargs):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            return super().search_ranked(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_max_concurrent_searches_run_at_once(tmp_path, slots):
    index = build_index(tmp_path / "index")
    searcher = SlowSearcher(index, HashEncoder())
    service = RetrievalService(index, searcher, max_concurrent_searches=slots)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            outcome = service.search(ALICE, QUERIES[0], top_k=4)
            assert outcome.results and outcome.stage_seconds["queue"] >= 0.0
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert searcher.most == slots
    finally:
        service.close()


def test_max_concurrent_searches_must_be_positive(tmp_path):
    index = build_index(tmp_path / "index")
    try:
        with pytest.raises(ValueError, match="max_concurrent_searches"):
            RetrievalService(index, Searcher(index, HashEncoder()), max_concurrent_searches=0)
    finally:
        index.close()
