"""GET /v1/documents/{doc_id}: permission-checked like search; 404 never tells absent
from forbidden."""

from __future__ import annotations

from tests.retrieval.api.helpers import auth, token

ALICE = auth(token("alice", ("staff",)))
ERIN = auth(token("erin", ("engineering",)))


def test_document_metadata(http):
    response = http.get("/v1/documents/hb:leave.md", headers=ALICE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["doc_id"] == "hb:leave.md" and body["path"] == "handbook/leave.md"
    assert body["chunk_count"] == 4 and body["doc_type"] == "md"
    assert body["context"] is None


def test_context_around_a_chunk(http):
    response = http.get(
        "/v1/documents/hb:leave.md", params={"around": "hb:leave.md#2"}, headers=ALICE
    )
    assert response.status_code == 200, response.text
    context = response.json()["context"]
    assert [c["chunk_id"] for c in context] == ["hb:leave.md#1", "hb:leave.md#2", "hb:leave.md#3"]
    assert "Parental leave" in context[1]["text"]
    wider = http.get(
        "/v1/documents/hb:leave.md",
        params={"around": "hb:leave.md#0", "window": 5},
        headers=ALICE,
    ).json()["context"]
    assert len(wider) == 4
    pdf = http.get(
        "/v1/documents/eng:runbook.pdf", params={"around": "eng:runbook.pdf#1"}, headers=ERIN
    ).json()["context"]
    assert pdf[1]["citation"]["deep_link"] == "file:///corpus/engineering/runbook.pdf#page=2"


def test_absent_and_forbidden_are_the_same_404(http):
    forbidden = http.get("/v1/documents/hr:salary.md", headers=ALICE)
    absent = http.get("/v1/documents/hr:nothing-here.md", headers=ALICE)
    fail_closed = http.get("/v1/documents/x:nobody.md", headers=auth(token("root", ("admin",))))
    assert forbidden.status_code == absent.status_code == fail_closed.status_code == 404
    assert forbidden.json()["detail"].replace("salary", "") == absent.json()["detail"].replace(
        "nothing-here", ""
    )
    # Denied users stay denied even with the allowed group.
    mallory = auth(token("mallory", ("hr",)))
    assert http.get("/v1/documents/hr:salary.md", headers=mallory).status_code == 404
    assert (
        http.get("/v1/documents/hr:salary.md", headers=auth(token("h", ("hr",)))).status_code == 200
    )


def test_around_must_be_a_readable_chunk_of_that_document(http):
    for around in ("hr:salary.md#0", "hb:travel.md#0", "hb:leave.md#99"):
        response = http.get("/v1/documents/hb:leave.md", params={"around": around}, headers=ALICE)
        assert response.status_code == 404, around


def test_bad_window_is_422(http):
    response = http.get(
        "/v1/documents/hb:leave.md", params={"around": "hb:leave.md#0", "window": 9}, headers=ALICE
    )
    assert response.status_code == 422
