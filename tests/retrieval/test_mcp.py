"""The MCP tools, called by the MCP SDK's own client over streamable HTTP on loopback, and
the OpenAI-style tool schema."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from retrieval.mcp_server import mcp_http_app, search_knowledge_tool_schema
from tests.retrieval.api.helpers import SECRET, auth, live_server, make_service, token
from tests.retrieval.token_fuzz import good_claims, signed


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory):
    service = make_service(
        tmp_path_factory.mktemp("mcp"),
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )
    with live_server(mcp_http_app(service)) as srv:
        yield srv, service
    service.close()


def _call(url: str, headers: dict[str, str], tool: str, args: dict):
    async def go():
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
        ):
            tools = await client.list_tools()
            result = await client.call_tool(tool, args)
            return [t.name for t in tools.tools], result

    return anyio.run(go)


def test_search_knowledge_returns_cited_passages_the_caller_may_read(mcp_server):
    srv, _ = mcp_server
    names, result = _call(
        srv.url, auth(token("alice", ("staff",))), "search_knowledge", {"query": "paid leave days"}
    )
    assert {"search_knowledge", "get_document"} <= set(names)
    assert not result.is_error, result
    data = result.structured_content
    assert data["results"] and isinstance(data["low_confidence"], bool)
    assert {r["doc_id"] for r in data["results"]} <= {"hb:leave.md", "hb:travel.md"}
    assert data["results"][0]["citation"]["path"] == "handbook/leave.md"
    assert json.loads(result.content[0].text)["results"] == data["results"]


def test_mcp_enforces_the_callers_acl(mcp_server):
    srv, _ = mcp_server
    query = {"query": "salary bands senior engineer Rotterdam", "top_k": 20}
    _, alice = _call(srv.url, auth(token("alice", ("staff",))), "search_knowledge", query)
    _, hr = _call(srv.url, auth(token("hanna", ("hr",))), "search_knowledge", query)
    assert "hr:salary.md" not in {r["doc_id"] for r in alice.structured_content["results"]}
    assert "hr:salary.md" in {r["doc_id"] for r in hr.structured_content["results"]}
    _, denied = _call(
        srv.url, auth(token("alice", ("staff",))), "get_document", {"doc_id": "hr:salary.md"}
    )
    assert denied.is_error and "not found" in denied.content[0].text
    _, allowed = _call(
        srv.url,
        auth(token("hanna", ("hr",))),
        "get_document",
        {"doc_id": "hr:salary.md", "around": "hr:salary.md#0"},
    )
    assert not allowed.is_error
    assert allowed.structured_content["context"][0]["chunk_id"] == "hr:salary.md#0"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("not-a-jwt"),
        auth(token(secret="wrong-secret-0123456789-abcdefghijk")),
        # Issue 16.5: these were 500s (no valid signature needed).
        auth(signed({"alg": "HS256", "kid": 1}, good_claims(), "x")),
        auth(signed({"alg": "HS256", "kid": None}, good_claims(), "x")),
        auth(signed({"alg": "HS256", "crit": ["x"]}, good_claims(), "x")),
        auth(signed({"alg": "HS256"}, good_claims(sub="al\ud800ice"), SECRET)),
    ],
    ids=range(7),
)
def test_mcp_without_a_valid_token_is_refused(mcp_server, headers):
    srv, _ = mcp_server
    import httpx

    response = httpx.post(
        srv.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={**headers, "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_tool_schema_is_an_openai_function():
    schema = search_knowledge_tool_schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "search_knowledge" and "citation" in fn["description"]
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["query"]
    assert params["properties"]["top_k"]["maximum"] == 50
    assert "$ref" not in json.dumps(params) and "$defs" not in params
    filters = params["properties"]["filters"]
    options = filters.get("anyOf", [filters])
    obj = next(o for o in options if o.get("type") == "object")
    assert {"sources", "paths", "doc_types", "modified_after", "modified_before"} == set(
        obj["properties"]
    )
