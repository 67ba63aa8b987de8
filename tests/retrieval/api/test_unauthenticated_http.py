"""Unauthenticated traffic is bounded: failed authentications are limited per client
address (429 with Retry-After), the audit log stays bounded under a flood of bad tokens,
and the per-principal limit counts every spelling of one user once."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from retrieval.api.app import create_app
from retrieval.api.middleware import AddressBuckets, client_key
from retrieval.audit import AuditLog, client_address
from retrieval.mcp_server import mcp_http_app
from retrieval.service import AuthenticationError
from tests.retrieval.api.helpers import auth, make_service, make_settings, token

QUERY = {"query": "leave policy"}
BAD = auth("not.a.token")


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(tmp_path):
    """An app allowing 5 failed authentications per address per minute."""
    service = make_service(tmp_path, rate_limit_per_minute=1_000)
    settings = make_settings(tmp_path, unauthenticated_rate_limit_per_minute=5)
    app = create_app(settings.api, service)
    yield app, service
    service.close()


def _client(app, address: str) -> TestClient:
    return TestClient(app, client=(address, 40_000))


def test_failed_authentications_are_limited_per_address(limited):
    """Issue 16.5: unauthenticated requests were not rate-limited at all."""
    app, service = limited
    attacker, neighbour = _client(app, "203.0.113.7"), _client(app, "198.51.100.2")
    statuses = [attacker.post("/v1/search", json=QUERY, headers=BAD).status_code for _ in range(5)]
    assert statuses == [401] * 5
    refused = attacker.get("/v1/documents/hb:leave.md", headers=BAD)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 12  # one token refills in 60/5 s
    # Limited before verification: from that address even a valid token waits.
    valid = auth(token("alice", ("staff",)))
    assert attacker.post("/v1/search", json=QUERY, headers=valid).status_code == 429
    assert attacker.get("/healthz").status_code == 200  # operational routes are not limited
    # Other addresses are not affected.
    assert neighbour.post("/v1/search", json=QUERY, headers=BAD).status_code == 401
    assert neighbour.post("/v1/search", json=QUERY, headers=valid).status_code == 200
    log = [json.loads(line) for line in service.audit.path.read_text().splitlines()]
    limited_lines = [e for e in log if e["outcome"] == "limited:address"]
    assert [e["client"] for e in limited_lines] == ["203.0.113.7", "203.0.113.7"]


def test_successful_authentications_cost_nothing(limited):
    app, _ = limited
    client = _client(app, "192.0.2.10")
    valid = auth(token("alice", ("staff",)))
    for _ in range(20):
        assert client.post("/v1/search", json=QUERY, headers=valid).status_code == 200
    statuses = [client.post("/v1/search", json=QUERY, headers=BAD).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


def test_the_mcp_endpoint_is_limited_too(tmp_path):
    service = make_service(
        tmp_path, rate_limit_per_minute=1_000, unauthenticated_rate_limit_per_minute=3
    )
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {**BAD, "Accept": "application/json, text/event-stream"}
    try:
        with TestClient(mcp_http_app(service), client=("203.0.113.9", 1)) as client:
            statuses = [client.post("/mcp", json=body, headers=headers) for _ in range(4)]
    finally:
        service.close()
    assert [r.status_code for r in statuses] == [401, 401, 401, 429]


def test_the_audit_log_stays_bounded_under_a_flood_of_bad_tokens(tmp_path):
    service = make_service(tmp_path, rate_limit_per_minute=1_000)
    clock = FakeClock()
    service.audit.close()
    service.audit = AuditLog(tmp_path / "flood.jsonl", refusals_per_minute=10, clock=clock)
    app = create_app(
        make_settings(tmp_path, unauthenticated_rate_limit_per_minute=100_000).api, service
    )
    client = _client(app, "203.0.113.50")
    # Through HTTP, then the same path in bulk (service.authenticate is what each
    # request runs; 10k requests over HTTP would only make the test slow).
    for _ in range(300):
        assert client.post("/v1/search", json=QUERY, headers=BAD).status_code == 401
    token_ = client_address.set("203.0.113.51")
    try:
        for _ in range(10_000):
            with pytest.raises(AuthenticationError, match="malformed"):
                service.authenticate("still.not.valid")
    finally:
        client_address.reset(token_)
    clock.now += 60
    service.close()
    lines = [json.loads(line) for line in (tmp_path / "flood.jsonl").read_text().splitlines()]
    assert len(lines) == 11  # ten in full, one summary
    summary = lines[-1]
    assert summary["event"] == "refusals_summary" and summary["suppressed"] == 10_290
    assert summary["top_clients"] == {"203.0.113.51": 10_000, "203.0.113.50": 290}


def test_the_per_principal_limit_counts_every_spelling_of_a_user_once(tmp_path):
    service = make_service(tmp_path, rate_limit_per_minute=3)
    client = TestClient(create_app(make_settings(tmp_path).api, service))
    try:
        statuses = [
            client.post("/v1/search", json=QUERY, headers=auth(token(user, ("staff",))))
            for user in ("Alice", "ALICE ", "ａｌｉｃｅ", "alice")
        ]
    finally:
        service.close()
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]


# ---------------------------------------------------------------- the buckets


def test_buckets_refill_at_the_configured_rate():
    clock = FakeClock()
    buckets = AddressBuckets(6, clock=clock)  # one token every 10 s
    for _ in range(6):
        assert buckets.retry_after("a") is None
        buckets.charge("a")
    assert math.isclose(buckets.retry_after("a"), 10.0)
    clock.now += 4
    assert math.isclose(buckets.retry_after("a"), 6.0)
    clock.now += 6
    assert buckets.retry_after("a") is None
    buckets.charge("a")
    assert buckets.retry_after("a") is not None
    clock.now += 3_600  # never more than a full bucket
    for _ in range(6):
        buckets.charge("a")
    assert buckets.retry_after("a") is not None


def test_buckets_track_a_bounded_number_of_addresses():
    buckets = AddressBuckets(1, max_addresses=100, clock=FakeClock())
    buckets.charge("busy")
    for i in range(1_000):
        buckets.charge(f"10.0.{i // 256}.{i % 256}")
        assert buckets.retry_after("busy") is not None  # recently seen: kept
    assert len(buckets) == 100


@pytest.mark.parametrize(
    "client, key",
    [
        (("203.0.113.7", 1), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1), "2001:db8:1:2::/64"),
        (("::ffff:198.51.100.2", 1), "198.51.100.2"),
        (("testclient", 1), "testclient"),
        (None, "unknown"),
    ],
)
def test_client_keys(client, key):
    assert client_key({"type": "http", "client": client}) == key
