"""Serving at speed without losing a check: per-stage timings on /metrics, the search
response serialised once, per-worker limits that never exceed the configured ones, and
the load test over MCP's streamable HTTP counting tool errors as errors."""

from __future__ import annotations

import os
import re

import pytest

from retrieval.api.app import per_worker_limits
from retrieval.api.loadtest import Probe, mcp_search, run_load_test
from retrieval.mcp_server import mcp_http_app
from tests.retrieval.api.helpers import auth, live_server, make_settings, token
from trove.config import Settings

STAGES = ("auth", "queue", "expand", "search", "rerank", "merge", "audit", "serialize")


def _stage_counts(text: str) -> dict[str, float]:
    pattern = r'^trove_search_stage_duration_seconds_count\{stage="(\w+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def test_search_stages_are_histograms_on_metrics(http):
    before = _stage_counts(http.get("/metrics").text)
    for _ in range(3):
        response = http.post(
            "/v1/search", json={"query": "annual leave days", "top_k": 3}, headers=auth(token())
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["results"], response.json()
    after = _stage_counts(http.get("/metrics").text)
    for stage in STAGES:
        assert after.get(stage, 0) - before.get(stage, 0) == 3, (stage, before, after)
    sums = dict(
        re.findall(
            r'^trove_search_stage_duration_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)$',
            http.get("/metrics").text,
            re.M,
        )
    )
    assert float(sums["search"]) > 0 and float(sums["serialize"]) > 0


def test_a_refused_search_is_timed_nowhere_but_refused(http):
    before = _stage_counts(http.get("/metrics").text)
    response = http.post("/v1/search", json={"query": "leave"}, headers=auth("not-a-token"))
    assert response.status_code == 401
    assert _stage_counts(http.get("/metrics").text).get("search", 0) == before.get("search", 0)


def test_the_response_body_is_the_documented_schema(http, app):
    # The route serialises the response itself: it must still match what /openapi.json says.
    body = http.post(
        "/v1/search", json={"query": "parental leave", "top_k": 2}, headers=auth(token())
    ).json()
    schema = app.openapi()["components"]["schemas"]["SearchResponse"]
    assert set(body) <= set(schema["properties"])
    assert set(schema.get("required", ())) <= set(body)
    first = body["results"][0]
    assert {"chunk_id", "doc_id", "text", "citation"} <= set(first)


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_per_worker_limits_never_exceed_the_configured_ones(tmp_path, workers):
    settings: Settings = make_settings(
        tmp_path, rate_limit_per_minute=100, unauthenticated_rate_limit_per_minute=10
    )
    split = per_worker_limits(settings.api, workers)
    assert split.rate_limit_per_minute * workers >= 100  # a spread caller gets its due
    assert split.rate_limit_per_minute * workers < 100 + workers  # and no more
    assert split.unauthenticated_rate_limit_per_minute * workers < 10 + workers
    assert split.unauthenticated_rate_limit_per_minute >= 1
    assert settings.api.rate_limit_per_minute == 100  # the original is left alone
    # One search per core across all workers (one worker: the service's own default).
    slots = split.max_concurrent_searches or (os.cpu_count() or 1)
    assert slots >= 1 and (slots - 1) * workers < (os.cpu_count() or 1)


def test_load_test_over_mcp_streamable_http(service):
    with live_server(mcp_http_app(service)) as server:
        good = [Probe("annual leave", token()), Probe("per diem hotel", token("bob"))]
        report = run_load_test(server.url, good, clients=4, duration_s=1.5, send=mcp_search())
        assert report["requests"] > 0 and report["errors"] == 0, report
        empty = [Probe(" ", token())]  # a tool error inside a 200 is still an error
        report = run_load_test(server.url, empty, clients=1, duration_s=0.5, send=mcp_search())
        assert report["errors"] == report["requests"] > 0, report
        assert set(report["statuses"]) == {"tool_error"}, report
        # Last: failed authentications also spend this address's budget (429s follow).
        bad = [Probe("annual leave", "not-a-token")]
        refused = run_load_test(server.url, bad, clients=2, duration_s=0.5, send=mcp_search())
        assert refused["requests"] > 0 and refused["errors"] == refused["requests"], refused


@pytest.mark.parametrize(("slots", "on_event_loop"), [(1, True), (2, False)])
def test_one_search_slot_answers_on_the_event_loop(tmp_path, slots, on_event_loop):
    """A worker with one search slot (a worker per core) answers on its event loop, with no
    hand-off to a thread; with more slots the searches share the cores in the thread pool.
    Either way the answer is the same."""
    import asyncio

    from fastapi.testclient import TestClient

    from retrieval.api.app import create_app
    from tests.retrieval.api.helpers import make_service

    service = make_service(tmp_path, rate_limit_per_minute=100_000)
    service.max_concurrent_searches = slots
    searched_on_loop: list[bool] = []
    search = service.search

    def recording(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            searched_on_loop.append(True)
        except RuntimeError:
            searched_on_loop.append(False)
        return search(*args, **kwargs)

    service.search = recording  # type: ignore[method-assign]
    try:
        with TestClient(create_app(make_settings(tmp_path).api, service)) as client:
            body = {"query": "annual leave days", "top_k": 3}
            first = client.post("/v1/search", json=body, headers=auth(token()))
            second = client.post("/v1/search", json=body, headers=auth(token()))
    finally:
        service.close()
    assert first.status_code == second.status_code == 200
    assert first.json()["results"] and first.json()["results"] == second.json()["results"]
    assert searched_on_loop == [on_event_loop, on_event_loop]
