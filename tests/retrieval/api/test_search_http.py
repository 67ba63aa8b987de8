"""POST /v1/search over real HTTP: results, citations, filters, limits and errors."""

from __future__ import annotations

import httpx
import pytest

from retrieval.api.app import create_app
from tests.retrieval.api.helpers import auth, live_server, make_service, make_settings, token

ALICE = auth(token("alice", ("staff",)))


def test_search_returns_cited_passages_the_user_may_read(http):
    response = http.post("/v1/search", json={"query": "how many days of paid leave"}, headers=ALICE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"results", "low_confidence", "took_ms"}
    assert body["took_ms"] > 0 and isinstance(body["low_confidence"], bool)
    first = body["results"][0]
    assert first["doc_id"] == "hb:leave.md"
    assert "27 days" in first["text"]
    cite = first["citation"]
    assert cite["path"] == "handbook/leave.md" and cite["uri"] == "file:///corpus/handbook/leave.md"
    assert cite["deep_link"].startswith(cite["uri"] + "#")
    assert cite["char_end"] > cite["char_start"]
    assert first["risk"] == [] and first["chunk_id"] in first["chunk_ids"]
    readable = {"hb:leave.md", "hb:travel.md"}
    assert {r["doc_id"] for r in body["results"]} <= readable
    assert len(body["results"]) <= 8  # the default top_k


def test_adjacent_chunks_are_merged_with_a_combined_citation(http):
    response = http.post(
        "/v1/search",
        json={"query": "leave days paid parental sick carry", "top_k": 3},
        headers=ALICE,
    )
    results = response.json()["results"]
    leave = [r for r in results if r["doc_id"] == "hb:leave.md"]
    assert len(leave) == 1, "four adjacent chunks should come back as one passage"
    merged = leave[0]
    assert merged["chunk_ids"] == [f"hb:leave.md#{i}" for i in range(4)]
    assert merged["citation"]["char_start"] == 0
    assert merged["text"].count("\n\n") == 3


def test_filters_narrow_and_never_widen(http):
    eng = auth(token("erin", ("engineering", "staff")))
    query = {"query": "runbook rollback leave per diem", "top_k": 20}
    everything = http.post("/v1/search", json=query, headers=eng).json()["results"]
    assert {"eng:runbook.pdf", "hb:leave.md"} <= {r["doc_id"] for r in everything}
    pdf = http.post(
        "/v1/search", json={**query, "filters": {"doc_types": ["pdf"]}}, headers=eng
    ).json()["results"]
    assert pdf and {r["doc_id"] for r in pdf} == {"eng:runbook.pdf"}
    assert pdf[0]["citation"]["deep_link"].endswith("#page=1")
    handbook = http.post(
        "/v1/search", json={**query, "filters": {"paths": ["handbook/"]}}, headers=eng
    ).json()["results"]
    assert {r["doc_id"] for r in handbook} <= {"hb:leave.md", "hb:travel.md"} and handbook
    recent = http.post(
        "/v1/search",
        json={**query, "filters": {"modified_after": "2025-02-01T00:00:00Z"}},
        headers=eng,
    ).json()["results"]
    assert recent and all(
        cid.split("#")[1] != "0" for r in recent for cid in r["chunk_ids"]
    )  # chunk 0 of every doc was modified in January
    # A filter naming a forbidden source or path still returns nothing forbidden.
    widened = http.post(
        "/v1/search",
        json={"query": "salary bands", "filters": {"sources": ["hr"], "paths": ["hr/"]}},
        headers=ALICE,
    ).json()["results"]
    assert widened == []


@pytest.mark.parametrize(
    "body, where",
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "top_k": 51}, "top_k"),
        ({"query": "x", "top_k": "many"}, "top_k"),
        ({"query": "x", "filters": {"colour": "red"}}, "colour"),
        ({"query": "x", "filters": {"modified_after": "yesterday"}}, "modified_after"),
        ({"query": "x", "filters": {"sources": "hr"}}, "sources"),
        ({"query": 42}, "query"),
        ({"query": "   "}, "non-empty"),
        ({"query": "x" * 2001}, "limit is 2000"),
    ],
)
def test_invalid_input_is_a_clear_422(http, body, where):
    response = http.post("/v1/search", json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    assert where in response.text


@pytest.mark.parametrize(
    "content, headers",
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b"query=x", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"\xff\xfe", {"Content-Type": "application/json"}),
    ],
)
def test_malformed_bodies_are_4xx_not_500(http, content, headers):
    response = http.post("/v1/search", content=content, headers={**ALICE, **headers})
    assert 400 <= response.status_code < 500, response.text


def test_body_size_limit_is_413(http):
    big = {"query": "leave", "padding": "x" * 70_000}
    response = http.post("/v1/search", json=big, headers=ALICE)
    assert response.status_code == 413

    def chunks():
        yield b'{"query": "leave", "padding": "'
        for _ in range(100):
            yield b"x" * 1_000
        yield b'"}'

    streamed = http.post("/v1/search", content=chunks(), headers=ALICE)
    assert streamed.status_code == 413


def test_rate_limit_per_principal(tmp_path):
    service = make_service(tmp_path, rate_limit_per_minute=3)
    app = create_app(make_settings(tmp_path, rate_limit_per_minute=3).api, service)
    try:
        with live_server(app) as srv, httpx.Client(base_url=srv.url) as client:
            bob = auth(token("bob", ("staff",)))
            codes = [
                client.post("/v1/search", json={"query": "leave"}, headers=bob).status_code
                for _ in range(4)
            ]
            assert codes == [200, 200, 200, 429]
            limited = client.post("/v1/search", json={"query": "leave"}, headers=bob)
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            # Another principal has its own budget.
            carol = auth(token("carol", ("staff",)))
            assert client.post("/v1/search", json={"query": "x"}, headers=carol).status_code == 200
    finally:
        service.close()
