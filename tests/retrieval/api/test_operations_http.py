"""/healthz, /readyz and /metrics, and the OpenAPI document at /docs."""

from __future__ import annotations

from pathlib import Path

from tests.retrieval.api.helpers import DOCS, auth, records, token


def test_health_and_ready(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"index": True, "model": True}}


def test_not_ready_when_the_index_is_closed(tmp_path):
    from fastapi.testclient import TestClient

    from retrieval.api.app import create_app
    from tests.retrieval.api.helpers import make_service, make_settings

    service = make_service(tmp_path)
    app = create_app(make_settings(tmp_path).api, service)
    service.index.close()
    client = TestClient(app, raise_server_exceptions=False)
    if True:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["index"] is False
        search = client.post(
            "/v1/search", json={"query": "leave"}, headers=auth(token("a", ("staff",)))
        )
        assert search.status_code == 503
        # The index's path (or an OpenSearch host) is for the operator's log, not the caller.
        assert search.json() == {"detail": "the index is unavailable"}
        assert str(tmp_path) not in search.text
    service.audit.close()


def test_an_unwritable_audit_log_is_a_503_that_names_no_file(tmp_path):
    from fastapi.testclient import TestClient

    from retrieval.api.app import create_app
    from retrieval.audit import AuditLog
    from tests.retrieval.api.helpers import make_service, make_settings

    service = make_service(tmp_path)
    app = create_app(make_settings(tmp_path).api, service)
    service.audit.close()
    service.audit = AuditLog(Path("/dev/full"))  # a full disk: every write fails
    client = TestClient(app, raise_server_exceptions=False)
    search = client.post(
        "/v1/search", json={"query": "leave"}, headers=auth(token("a", ("staff",)))
    )
    assert search.status_code == 503
    assert search.json() == {"detail": "the audit log is unavailable"}
    assert "/dev/full" not in search.text


def _metric(text: str, prefix: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    ]
    assert values, prefix
    return sum(values)


def test_metrics_count_requests_results_and_index_size(http):
    before = http.get("/metrics").text
    alice = auth(token("alice", ("staff",)))
    body = http.post("/v1/search", json={"query": "per diem hotel"}, headers=alice).json()
    http.post("/v1/search", json={"query": "x"}, headers=auth("bad"))
    after = http.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = 'trove_http_requests_total{method="POST",route="/v1/search",status="200"}'
    denied = 'trove_http_requests_total{method="POST",route="/v1/search",status="401"}'
    assert _metric(text, ok) == (_metric(before, ok) if ok in before else 0) + 1
    assert _metric(text, denied) >= 1
    assert 'trove_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    returned = _metric(text, "trove_search_results_returned_total")
    assert returned >= len(body["results"]) >= 1
    assert 'trove_search_filtered_out_total{reason="per_document_cap"}' in text
    assert _metric(text, "trove_index_chunks ") == len(records())
    assert _metric(text, "trove_index_documents ") == len(DOCS)
    assert _metric(text, "trove_index_size_bytes ") > 0
    # Unknown paths share one label: no cardinality explosion.
    http.get("/no/such/path/12345")
    assert 'route="unmatched"' in http.get("/metrics").text


def test_openapi_and_docs(http):
    schema = http.get("/openapi.json").json()
    assert {"/v1/search", "/v1/documents/{doc_id}", "/healthz", "/readyz", "/metrics"} <= set(
        schema["paths"]
    )
    assert "bearerAuth" in schema["components"]["securitySchemes"]
    assert http.get("/docs").status_code == 200
