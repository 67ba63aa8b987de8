"""BulkWriter: per-item accounting, retry with backoff, backpressure.

A scripted fake client stands in for the cluster (unit tests); the same writer
against osmem-server is exercised in test_opensearch_osmem.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from opensearchpy import exceptions as os_errors

from retrieval.index.opensearch.bulk import BulkAction, BulkPolicy, BulkWriter
from retrieval.index.opensearch.errors import BulkWriteError

pytestmark = pytest.mark.opensearch

ItemScript = Callable[[int, str], int]  # (call number, id) -> status


class FakeBulkClient:
    """Answers `bulk` like OpenSearch: HTTP 200 with a status per item."""

    def __init__(self, item_status: ItemScript | None = None, raises: list | None = None):
        self.item_status = item_status or (lambda call, id_: 201)
        self.raises = list(raises or [])
        self.calls: list[list[str]] = []
        self.params: list[dict] = []

    def bulk(self, body: str, params: dict) -> dict:
        lines = body.splitlines()
        ids = []
        i = 0
        while i < len(lines):
            meta = json.loads(lines[i])
            ((op, info),) = meta.items()
            ids.append((op, info["_id"]))
            i += 1 if op == "delete" else 2
        assert body.endswith("\n")
        self.calls.append([id_ for _, id_ in ids])
        self.params.append(params)
        if self.raises:
            exc = self.raises.pop(0)
            if exc is not None:
                raise exc
        items = []
        for op, id_ in ids:
            status = self.item_status(len(self.calls), id_)
            result: dict = {"_id": id_, "status": status}
            if status >= 300:
                kind = "es_rejected_execution_exception" if status == 429 else "mapper_exception"
                result["error"] = {"type": kind, "reason": f"refused {id_}"}
            items.append({op: result})
        return {"errors": any(s[op]["status"] >= 300 for s in items), "items": items}


def actions(n: int) -> list[BulkAction]:
    return [BulkAction.index_doc("idx", f"c{i}", {"n": i}) for i in range(n)]


def writer(client, sleeps: list[float], **policy) -> BulkWriter:
    return BulkWriter(
        client,
        BulkPolicy(**{"initial_backoff_s": 1.0, **policy}),
        sleep=sleeps.append,
        jitter=lambda: 1.0,  # deterministic: the full backoff
    )


def test_a_200_response_can_hide_failed_items():
    client = FakeBulkClient(lambda call, id_: 400 if id_ == "c3" else 201)
    report = writer(client, []).write(actions(5))
    assert report.succeeded == 4
    assert [(f.id, f.status, f.error_type) for f in report.failures] == [
        ("c3", 400, "mapper_exception")
    ]
    with pytest.raises(BulkWriteError, match=r"1 of 5 items failed.*c3") as info:
        report.raise_for_failures()
    assert info.value.failures == report.failures


def test_429_items_are_retried_with_backoff_and_the_chunk_shrinks():
    # The first two attempts refuse odd ids with 429; the third accepts everything.
    client = FakeBulkClient(lambda call, id_: 429 if call <= 2 and int(id_[1:]) % 2 else 201)
    sleeps: list[float] = []
    w = writer(client, sleeps, max_actions=64, min_actions=4)
    report = w.write(actions(10))
    assert report.succeeded == 10 and not report.failures
    assert client.calls[1] == ["c1", "c3", "c5", "c7", "c9"]  # only the refused items
    assert report.retried_items == 10 and report.throttled == 2
    assert sleeps == [1.0, 2.0]  # exponential backoff
    assert w.chunk_size < 64  # backpressure: smaller requests after throttling


def test_items_still_refused_after_max_retries_are_reported():
    client = FakeBulkClient(lambda call, id_: 503 if id_ == "c0" else 201)
    sleeps: list[float] = []
    report = writer(client, sleeps, max_retries=2).write(actions(3))
    assert [(f.id, f.status) for f in report.failures] == [("c0", 503)]
    assert report.succeeded == 2 and len(sleeps) == 2


def test_transient_request_errors_are_retried():
    client = FakeBulkClient(
        raises=[
            os_errors.ConnectionTimeout("TIMEOUT", "read timed out", None),
            os_errors.TransportError(503, "unavailable", {}),
            None,
        ]
    )
    sleeps: list[float] = []
    report = writer(client, sleeps).write(actions(3))
    assert report.succeeded == 3 and report.requests == 3
    assert sleeps == [1.0, 2.0]


def test_permanent_request_errors_are_raised_at_once():
    client = FakeBulkClient(raises=[os_errors.RequestError(400, "parse_exception", {})])
    sleeps: list[float] = []
    with pytest.raises(os_errors.RequestError):
        writer(client, sleeps).write(actions(3))
    assert sleeps == [] and len(client.calls) == 1


def test_request_errors_beyond_max_retries_are_raised():
    timeouts = [os_errors.ConnectionTimeout("TIMEOUT", "t", None) for _ in range(4)]
    client = FakeBulkClient(raises=timeouts)
    with pytest.raises(os_errors.ConnectionTimeout):
        writer(client, [], max_retries=3).write(actions(1))
    assert len(client.calls) == 4


def test_request_too_large_splits_the_chunk():
    client = FakeBulkClient(raises=[os_errors.TransportError(413, "too large", {})])
    report = writer(client, []).write(actions(6))
    assert report.succeeded == 6
    assert client.calls == [[f"c{i}" for i in range(6)], ["c0", "c1", "c2"], ["c3", "c4", "c5"]]


def test_chunks_by_count_and_bytes_and_consumes_lazily():
    client = FakeBulkClient()
    w = writer(client, [], max_actions=4, min_actions=1)
    consumed: list[int] = []

    def produce():
        for a in actions(10):
            consumed.append(int(a.id[1:]))
            # Backpressure: never more than one chunk (plus the one that closes it) ahead.
            assert len(consumed) <= 4 * len(client.calls) + 5
            yield a

    w.write(produce())
    assert [len(c) for c in client.calls] == [4, 4, 2]
    big = [BulkAction.index_doc("idx", f"b{i}", {"t": "x" * 600}) for i in range(5)]
    client.calls.clear()
    writer(client, [], max_actions=100, max_bytes=1500).write(big)
    assert [len(c) for c in client.calls] == [2, 2, 1]


def test_ndjson_lines_and_params():
    update = BulkAction.update_doc("idx", "a:b/c#1", {"acl_public": True})
    assert update.lines() == (
        '{"update":{"_index":"idx","_id":"a:b/c#1","retry_on_conflict":3}}\n'
        '{"doc":{"acl_public":true}}\n'
    )
    assert BulkAction.delete_doc("idx", "x").lines() == '{"delete":{"_index":"idx","_id":"x"}}\n'
    client = FakeBulkClient()
    BulkWriter(client, require_alias=True).write(actions(1))
    assert client.params[0]["refresh"] == "false"
    assert client.params[0]["require_alias"] == "true"
    with pytest.raises(ValueError):
        BulkPolicy(min_actions=10, max_actions=5)
