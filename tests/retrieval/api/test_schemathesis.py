"""Schemathesis against the app's own OpenAPI schema: generated valid and invalid requests,
with a valid token, never get a 5xx, and responses match the schema; with a hostile token
(tests/retrieval/token_fuzz.py) they are all 401s.

Driven through Hypothesis directly (one strategy per operation and generation mode):
schemathesis' pytest plugin does not load under pytest 9 here.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from retrieval.api.app import create_app
from retrieval.auth import InvalidTokenError, TokenVerifier
from tests.retrieval.api.helpers import SECRET, auth, make_service, make_settings, token
from tests.retrieval.token_fuzz import fuzzed_tokens, header_safe

HEADERS = auth(token("alice", ("staff", "hr", "engineering")))
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# Negative data needs parameters to break; the operational endpoints take none.
CASES = [
    ("POST", "/v1/search", POSITIVE),
    ("POST", "/v1/search", NEGATIVE),
    ("GET", "/v1/documents/{doc_id}", POSITIVE),
    ("GET", "/v1/documents/{doc_id}", NEGATIVE),
    ("GET", "/healthz", POSITIVE),
    ("GET", "/readyz", POSITIVE),
    ("GET", "/metrics", POSITIVE),
]


@pytest.fixture(scope="module")
def operations(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    limits = {"rate_limit_per_minute": 1_000_000, "unauthenticated_rate_limit_per_minute": 10**6}
    service = make_service(tmp, audit_log=None, **limits)
    app = create_app(make_settings(tmp, audit_log=None, **limits).api, service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = {(op.ok().method.upper(), op.ok().path): op.ok() for op in schema.get_all_operations()}
    yield ops
    service.close()


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_server_errors(operations, method, path, mode):
    operation = operations[(method, path)]
    seen: list[int] = []

    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def run(case):
        checks = [not_a_server_error, content_type_conformance]
        if mode is POSITIVE:
            checks.append(response_schema_conformance)
        response = case.call_and_validate(headers=HEADERS, checks=checks)
        seen.append(response.status_code)

    run()
    assert seen, "no requests were generated"
    assert all(code < 500 for code in seen)
    if mode is POSITIVE and "{doc_id}" not in path:  # random doc ids are rightly 404
        assert 200 in seen, f"valid requests were all refused: {sorted(set(seen))}"


@pytest.mark.parametrize(
    "method, path", [("POST", "/v1/search"), ("GET", "/v1/documents/{doc_id}")]
)
def test_bad_authorization_headers_are_401(operations, method, path):
    """Valid requests from the schema, each with a hostile bearer token: always a 401."""
    operation = operations[(method, path)]
    seen: list[int] = []

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=POSITIVE), fuzzed_tokens(SECRET))
    def run(case, bad):
        sent = header_safe(bad).decode("latin-1")
        try:
            TokenVerifier(secret=SECRET).verify(sent.strip())
        except InvalidTokenError:
            pass
        else:
            return  # the rare token that is valid after all
        headers = {"Authorization": "Bearer " + sent}
        response = case.call_and_validate(
            headers=headers, checks=[not_a_server_error, content_type_conformance]
        )
        seen.append(response.status_code)
        if response.status_code == 404:  # a generated doc_id no route matches (e.g. empty)
            assert response.json() == {"detail": "Not Found"}
            return
        assert response.status_code == 401, response.text

    run()
    assert 401 in seen, f"no hostile token reached the app: {sorted(set(seen))}"
