"""Hostile bearer tokens at every authenticated HTTP endpoint (``/v1/search``,
``/v1/documents/{id}``, MCP ``/mcp``): a token the verifier refuses is a 401 with an
``invalid_token`` challenge, whatever its header and payload hold; nothing is a 5xx."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.api.app import create_app
from retrieval.auth import InvalidTokenError
from retrieval.mcp_server import mcp_http_app
from tests.retrieval.api.helpers import SECRET, make_service, make_settings
from tests.retrieval.token_fuzz import fuzzed_tokens, header_safe

UNLIMITED = {"rate_limit_per_minute": 10**9, "unauthenticated_rate_limit_per_minute": 10**9}
MCP_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("fuzz"), **UNLIMITED)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def api(service, tmp_path_factory):
    settings_ = make_settings(tmp_path_factory.mktemp("fuzz-app"), **UNLIMITED)
    return TestClient(create_app(settings_.api, service), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def mcp(service):
    with TestClient(mcp_http_app(service), raise_server_exceptions=False) as client:
        yield client


def _refused(service, value: bytes) -> bool:
    # What a server reads from the header: latin-1, surrounding whitespace dropped.
    text = value.decode("latin-1").strip()
    try:
        service.verifier.verify(text)
    except InvalidTokenError:
        return True
    return False


def _authorization(token: str) -> dict[str, bytes]:
    return {"Authorization": b"Bearer " + header_safe(token)}


@FUZZ
@given(fuzzed_tokens(SECRET), st.sampled_from(["search", "document"]))
def test_fuzzed_tokens_on_the_api(api, service, tok, endpoint):
    headers = _authorization(tok)
    if endpoint == "search":
        response = api.post("/v1/search", json={"query": "leave"}, headers=headers)
    else:
        response = api.get("/v1/documents/hb:leave.md", headers=headers)
    assert response.status_code < 500, response.text
    if _refused(service, headers["Authorization"][7:]):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert response.status_code in (200, 404), response.text


@FUZZ
@given(fuzzed_tokens(SECRET))
def test_fuzzed_tokens_on_mcp(mcp, service, tok):
    headers = {**_authorization(tok), "Accept": "application/json, text/event-stream"}
    response = mcp.post("/mcp", json=MCP_LIST, headers=headers)
    assert response.status_code < 500, response.text
    if _refused(service, headers["Authorization"][7:]):
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer " + "é".encode("latin-1") * 10,
        b"Bearer \xff\xfe.\x80.x",
        b"Bearer " + b"a" * 20_000,
        b"Bearer a.b.c d.e.f",
        b"bearer   ",
        b"Token abc",
    ],
)
def test_odd_authorization_headers(api, mcp, value):
    search = api.post("/v1/search", json={"query": "leave"}, headers={"Authorization": value})
    mcp_headers = {"Authorization": value, "Accept": "application/json, text/event-stream"}
    over_mcp = mcp.post("/mcp", json=MCP_LIST, headers=mcp_headers)
    assert (search.status_code, over_mcp.status_code) == (401, 401)
