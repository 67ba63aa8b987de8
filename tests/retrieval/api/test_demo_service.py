"""The whole service on the bundled demo corpus, with the real parser, model and index:
a real server on loopback, the Python client, MCP over stdio, and the bounded load test."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from retrieval.api.app import create_app
from retrieval.api.loadtest import LoadTestError, Probe, run_load_test
from retrieval.auth import mint_token
from retrieval.client import TroveClient
from retrieval.evaluate import load_queries
from tests.retrieval.api.helpers import live_server
from trove import demo
from trove.config import load_settings
from trove.ingest import run_ingest
from trove.wiring import build_retrieval_service

pytestmark = pytest.mark.model

SECRET = "demo-service-secret-0123456789-abcdefghij"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo-service")
    config = demo.prepare(workdir)
    with config.open("a", encoding="utf-8") as f:
        f.write(
            f"api: {{jwt_secret: {SECRET}, rate_limit_per_minute: 1000000, "
            f"audit_log: {workdir / 'audit.jsonl'}}}\n"
        )
    run_ingest(config)
    settings = load_settings(config)
    service = build_retrieval_service(settings)
    with live_server(create_app(settings.api, service)) as server:
        yield server.url, service, config
    service.close()


def _client(url: str, user: str, groups, tenant=None) -> TroveClient:
    return TroveClient(url, mint_token(SECRET, user, groups, tenant=tenant))


def test_two_users_same_question_different_answers(deployment):
    url, _, _ = deployment
    dana, sam = demo.DEMO_USERS
    with _client(url, dana.user, dana.groups) as c:
        as_dana = c.search(demo.DEMO_QUESTION, top_k=5)
    with _client(url, sam.user, sam.groups) as c:
        as_sam = c.search(demo.DEMO_QUESTION, top_k=5)
    assert as_dana.results[0].citation.path == "hr/salary-bands.xlsx"
    assert not as_dana.low_confidence
    assert all(not r.citation.path.startswith("hr/") for r in as_sam.results)


def test_golden_queries_through_the_api_leak_nothing(deployment):
    url, service, _ = deployment
    top_hits = 0
    golden = load_queries(demo.QUERIES_FILE)
    for q in golden:
        with _client(url, q.user, q.groups, q.tenant) as c:
            answer = c.search(q.query, top_k=8)
        ids = [cid for r in answer.results for cid in r.chunk_ids]
        stored = service.index.get_chunks(ids)
        assert len(stored) == len(ids)
        assert all(r.acl.permits(q.principal()) for r in stored), q.id
        assert not any(r.citation.path.startswith(tuple(q.forbidden)) for r in answer.results)
        top_hits += answer.results[0].citation.path in q.relevant
    assert top_hits / len(golden) >= 0.9


def test_off_topic_questions_are_low_confidence(deployment):
    url, _, _ = deployment
    with _client(url, "alex", ["all-staff"]) as c:
        for question in ("How tall is Mount Kilimanjaro?", "Best way to train a puppy to sit"):
            assert c.search(question).low_confidence, question
        answer = c.search("How many days of paid vacation do full-time employees get per year?")
    assert not answer.low_confidence


def test_deep_links_on_real_documents(deployment):
    url, _, _ = deployment
    with _client(url, "fin", ["finance", "all-staff"]) as c:
        pdf = c.search("vendor payment terms", filters={"doc_types": ["pdf"]}, top_k=3)
        md = c.search("parental leave", filters={"doc_types": ["md"]}, top_k=3)
    link = pdf.results[0].citation.deep_link
    assert link.startswith(pdf.results[0].citation.uri) and "#page=" in link
    md_top = md.results[0].citation
    assert md_top.section and md_top.deep_link.startswith(md_top.uri + "#")


def test_ready_with_the_model_loaded(deployment):
    import httpx

    url, _, _ = deployment
    assert httpx.get(url + "/readyz").json()["checks"] == {"index": True, "model": True}


def _probes() -> list[Probe]:
    return [
        Probe(q.query, mint_token(SECRET, q.user, q.groups, tenant=q.tenant))
        for q in load_queries(demo.QUERIES_FILE)
    ]


def test_short_load_test(deployment):
    url, _, _ = deployment
    report = run_load_test(url, _probes(), clients=16, duration_s=3.0)
    assert report["requests"] > 0 and report["errors"] == 0, report
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]


def test_load_test_refuses_other_hosts():
    with pytest.raises(LoadTestError, match="loopback"):
        run_load_test("http://example.com:8080", [Probe("q", "t")], duration_s=1)
    with pytest.raises(LoadTestError, match="clients"):
        run_load_test("http://127.0.0.1:1", [Probe("q", "t")], clients=500, duration_s=1)


@pytest.mark.slow
def test_load_test_16_clients_30_seconds(deployment):
    url, _, _ = deployment
    report = run_load_test(url, _probes(), clients=16, duration_s=30.0)
    print(json.dumps(report))
    assert report["errors"] == 0, report
    assert report["requests"] >= 16


@pytest.mark.slow
def test_mcp_over_stdio_with_the_sdk_client(deployment):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    _, _, config = deployment
    params = StdioServerParameters(
        command=str(Path(sys.executable).parent / "trove"),
        args=["mcp", "--config", str(config)],
        env={**os.environ, "TROVE_TOKEN": mint_token(SECRET, "sam", ["all-staff", "engineering"])},
    )

    async def go():
        async with Client(params) as client:
            return await client.call_tool("search_knowledge", {"query": demo.DEMO_QUESTION})

    result = anyio.run(go)
    assert not result.is_error, result
    paths = [r["citation"]["path"] for r in result.structured_content["results"]]
    assert paths and not any(p.startswith("hr/") for p in paths)
