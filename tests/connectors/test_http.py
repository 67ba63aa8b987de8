"""The shared HTTP retry policy against a real loopback server (pytest-httpserver)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from werkzeug import Response

from connectors.http import (
    HttpClient,
    SourceAuthError,
    SourceUnavailable,
    retry_after_seconds,
)
from core.retry import RetryPolicy, backoff_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def client(policy: RetryPolicy | None = None) -> tuple[HttpClient, Clock]:
    clock = Clock()
    http = HttpClient(
        httpx.Client(timeout=5), policy, sleep=clock.sleep, rand=lambda: 1.0, clock=clock
    )
    return http, clock


def sequence(httpserver, path: str, responses: list[Response]) -> None:
    for r in responses:
        httpserver.expect_ordered_request(path).respond_with_response(r)


def test_retry_after_in_seconds_is_honoured(httpserver):
    sequence(httpserver, "/x", [Response("slow down", 429, {"Retry-After": "2"}), Response("ok")])
    http, clock = client()
    assert http.get(httpserver.url_for("/x")).text == "ok"
    assert clock.sleeps == [2.0] and http.retries == 1


def test_retry_after_as_an_http_date_is_honoured(httpserver):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    sequence(httpserver, "/x", [Response("", 503, {"Retry-After": when}), Response("ok")])
    http, clock = client()
    assert http.get(httpserver.url_for("/x")).status_code == 200
    assert 27 <= clock.sleeps[0] <= 30


def test_without_retry_after_backoff_is_exponential_capped_and_jittered(httpserver):
    sequence(httpserver, "/x", [Response("", 502)] * 4 + [Response("ok")])
    http, clock = client(RetryPolicy(base_delay_s=1, max_delay_s=3, max_attempts=10))
    assert http.get(httpserver.url_for("/x")).text == "ok"
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]  # rand()=1 picks the top of [base/2, base]
    assert [backoff_seconds(a, RetryPolicy(), lambda: 0.0) for a in range(3)] == [0.5, 1.0, 2.0]


def test_total_retry_time_is_bounded(httpserver):
    httpserver.expect_request("/x").respond_with_response(Response("", 429, {"Retry-After": "50"}))
    http, clock = client(RetryPolicy(max_delay_s=60, max_total_s=120, max_attempts=100))
    with pytest.raises(SourceUnavailable, match="still failing after 3 attempts"):
        http.get(httpserver.url_for("/x"))
    assert clock.sleeps == [50.0, 50.0]


def test_a_retry_after_longer_than_max_delay_is_waited_in_full(httpserver):
    # Regression (issue 18): the server's wait used to be cut to max_delay_s, so the
    # retry came early, earned another 429 and spent the budget for nothing.
    sequence(httpserver, "/x", [Response("", 429, {"Retry-After": "90"}), Response("ok")])
    http, clock = client(RetryPolicy(max_delay_s=60, max_total_s=300))
    assert http.get(httpserver.url_for("/x")).text == "ok"
    assert clock.sleeps == [90.0]


def test_atlassian_rate_limit_reset_is_honoured_when_later_than_retry_after(httpserver):
    # developer.atlassian.com/cloud/confluence/rate-limiting: X-RateLimit-Reset is an
    # ISO 8601 time ("yyyy-MM-ddTHH:mmZ"); Retry-After may be absent or shorter.
    reset = (datetime.now(UTC) + timedelta(seconds=125)).strftime("%Y-%m-%dT%H:%M:%SZ")
    limited = Response("", 429, {"Retry-After": "5", "X-RateLimit-Reset": reset})
    sequence(httpserver, "/x", [limited, Response("ok")])
    http, clock = client(RetryPolicy(max_delay_s=10, max_total_s=600))
    assert http.get(httpserver.url_for("/x")).text == "ok"
    assert 120 <= clock.sleeps[0] <= 125


def test_a_wait_past_the_budget_fails_at_once_and_says_so(httpserver):
    httpserver.expect_request("/x").respond_with_response(
        Response("", 429, {"Retry-After": "3600"})
    )
    http, clock = client(RetryPolicy(max_delay_s=60, max_total_s=300))
    with pytest.raises(SourceUnavailable, match="retry budget ran out: the server asked to wait"):
        http.get(httpserver.url_for("/x"))
    assert clock.sleeps == []  # no early retry that could only be refused again
    assert http.budget_exhausted


def test_refusals_name_the_url_but_never_the_credentials_or_query(httpserver):
    httpserver.expect_request("/wiki/api").respond_with_response(Response("", 401))
    http, _ = client()
    with pytest.raises(SourceAuthError) as err:
        http.get(httpserver.url_for("/wiki/api") + "?sig=SECRETSAS", auth=("bot", "hunter2-token"))
    message = str(err.value)
    assert "/wiki/api" in message and "401" in message
    assert "hunter2" not in message and "SECRETSAS" not in message


def test_a_403_with_retry_after_is_overload_not_refusal(httpserver):
    sequence(httpserver, "/x", [Response("", 403, {"Retry-After": "1"}), Response("ok")])
    http, clock = client()
    assert http.get(httpserver.url_for("/x")).text == "ok" and clock.sleeps == [1.0]


def test_other_client_errors_are_returned_to_the_caller(httpserver):
    httpserver.expect_request("/gone").respond_with_response(Response("", 404))
    http, clock = client()
    assert http.get(httpserver.url_for("/gone")).status_code == 404 and clock.sleeps == []


def test_transport_errors_are_retried_then_reported():
    http, clock = client(RetryPolicy(max_attempts=3))
    with pytest.raises(SourceUnavailable, match="ConnectError"):
        http.get("http://127.0.0.1:9/nothing-listens-here")
    assert len(clock.sleeps) == 2


def test_retry_after_parsing():
    now = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Sat, 21 Nov 2026 07:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sat, 21 Nov 2026 06:00:00 GMT", now) == 0.0  # past: now
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
