"""The audit log: any content is written as valid JSON, and refusals without a principal
are sampled so that a flood of bad tokens adds a bounded number of lines."""

from __future__ import annotations

import json

import pytest

from retrieval.audit import AuditLog, client_address


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_lone_surrogates_and_controls_are_written_as_valid_json(tmp_path):
    """Issue 16.5: a surrogate in a claim made the audit write (and the request) fail."""
    log = AuditLog(tmp_path / "audit.jsonl", include_queries=True)
    odd = "a\ud800b\udfff\x00\u202e\n"
    log.record("search", principal=odd, tenant=odd, query=odd, doc_id=odd, chunk_ids=[odd])
    log.close()
    (entry,) = _lines(tmp_path / "audit.jsonl")
    assert entry["principal"] == entry["tenant"] == entry["query"] == entry["doc_id"] == odd
    assert entry["chunk_ids"] == [odd] and len(entry["query_sha256"]) == 64


def test_a_flood_of_refusals_adds_a_bounded_number_of_lines(tmp_path):
    clock = FakeClock()
    log = AuditLog(tmp_path / "audit.jsonl", refusals_per_minute=20, clock=clock)
    for i in range(10_000):
        token = client_address.set(f"10.0.{i % 50}.1")
        try:
            log.record("auth", principal=None, outcome="unauthenticated")
        finally:
            client_address.reset(token)
    log.record("search", principal="alice", query="q")  # authenticated lines are never sampled
    lines = _lines(tmp_path / "audit.jsonl")
    assert len(lines) == 21
    assert [e["client"] for e in lines[:3]] == ["10.0.0.1", "10.0.1.1", "10.0.2.1"]
    assert lines[-1]["principal"] == "alice"

    clock.now += 61  # the next line of any kind closes the window with its summary
    log.record("auth", principal=None, outcome="unauthenticated")
    summary, first_of_next = _lines(tmp_path / "audit.jsonl")[21:]
    assert summary["event"] == "refusals_summary"
    assert summary["suppressed"] == 10_000 - 20 and summary["written"] == 20
    assert summary["by_outcome"] == {"auth:unauthenticated": 9_980}
    assert len(summary["top_clients"]) == 10 and sum(summary["top_clients"].values()) <= 9_980
    assert first_of_next["outcome"] == "unauthenticated"  # a new window writes again
    log.close()
    assert len(_lines(tmp_path / "audit.jsonl")) == 23


def test_close_writes_the_pending_summary(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", refusals_per_minute=1, clock=FakeClock())
    for _ in range(5):
        log.record("rate_limit", principal=None, outcome="limited:address")
    log.close()
    first, summary = _lines(tmp_path / "audit.jsonl")
    assert first["outcome"] == "limited:address" and "client" not in first
    assert summary["suppressed"] == 4 and summary["top_clients"] == {"unknown": 4}


def test_counted_clients_are_bounded(tmp_path, monkeypatch):
    import retrieval.audit as audit

    monkeypatch.setattr(audit, "MAX_COUNTED_CLIENTS", 3)
    log = AuditLog(tmp_path / "audit.jsonl", refusals_per_minute=0, clock=FakeClock())
    for i in range(50):
        token = client_address.set(f"client-{i}")
        log.record("auth", principal=None, outcome="unauthenticated")
        client_address.reset(token)
    log.close()
    (summary,) = _lines(tmp_path / "audit.jsonl")
    assert summary["top_clients"] == {"client-0": 1, "client-1": 1, "client-2": 1, "other": 47}


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="per_window"):
        AuditLog(None, refusals_per_minute=-1)
