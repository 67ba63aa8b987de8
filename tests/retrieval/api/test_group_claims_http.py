"""Entries of a token's ``groups`` claim are groups only: the group directory never reads
them as user identities, so claiming a "group" named after the CEO's e-mail address does
not bring the CEO's groups (issue 16.5, end to end over the API)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from connectors.base import DirectoryUser, GroupSnapshot
from core.acl import Acl
from retrieval.api.app import create_app
from retrieval.directory import GroupDirectory
from tests.retrieval.api.helpers import DOCS, auth, build_index, make_service, make_settings, token

EXEC = "wiki:group:exec"
BOARD_DOC = "wiki:board.md"
CEO_NOTES = "wiki:ceo-notes.md"  # shared with the CEO alone, by native user token
QUERY = {"query": "board merger minutes", "top_k": 20}


@pytest.fixture
def client(tmp_path):
    docs = {
        **DOCS,
        BOARD_DOC: (
            "wiki/board.md",
            "md",
            Acl(allow_groups=frozenset({EXEC})),
            ["Board minutes: the merger is approved by the board."],
        ),
        CEO_NOTES: (
            "wiki/ceo-notes.md",
            "md",
            Acl(allow_groups=frozenset({"wiki:user:1"})),
            ["Private notes on the board merger for the chief executive."],
        ),
    }
    directory = GroupDirectory(tmp_path / "groups.sqlite")
    directory.replace_source(
        GroupSnapshot(
            source="wiki",
            # Members by native token and, as some directories report them, by e-mail.
            members={EXEC: frozenset({"wiki:user:1", "cfo@corp.com"})},
            users=[DirectoryUser(token="wiki:user:1", identities=frozenset({"ceo@corp.com"}))],
        )
    )
    service = make_service(
        tmp_path, index=build_index(tmp_path / "index", docs), identity=directory
    )
    yield TestClient(create_app(make_settings(tmp_path).api, service))
    service.close()


def _docs(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {r["doc_id"] for r in response.json()["results"]}


def test_a_group_claim_named_after_a_user_is_not_that_user(client):
    ceo = auth(token("ceo@corp.com", ()))
    assert BOARD_DOC in _docs(client.post("/v1/search", json=QUERY, headers=ceo))
    assert client.get(f"/v1/documents/{BOARD_DOC}", headers=ceo).status_code == 200
    cfo = auth(token("cfo@corp.com", ()))
    assert BOARD_DOC in _docs(client.post("/v1/search", json=QUERY, headers=cfo))
    for claimed in (["ceo@corp.com"], ["CFO@Corp.com"], ["cfo@corp.com"], ["wiki:user:1"]):
        impostor = auth(token("mallory@corp.com", tuple(claimed)))
        assert BOARD_DOC not in _docs(client.post("/v1/search", json=QUERY, headers=impostor))
        assert client.get(f"/v1/documents/{BOARD_DOC}", headers=impostor).status_code == 404


def test_a_claimed_group_is_still_a_group(client):
    member = auth(token("someone@corp.com", (EXEC,)))
    assert BOARD_DOC in _docs(client.post("/v1/search", json=QUERY, headers=member))


def test_a_user_token_in_the_groups_claim_is_dropped(client):
    ceo = auth(token("ceo@corp.com", ()))
    assert CEO_NOTES in _docs(client.post("/v1/search", json=QUERY, headers=ceo))
    for claimed in (["wiki:user:1"], ["Wiki:User:1"], ["wiki:user:1", EXEC]):
        impostor = auth(token("mallory@corp.com", tuple(claimed)))
        assert CEO_NOTES not in _docs(client.post("/v1/search", json=QUERY, headers=impostor))
        assert client.get(f"/v1/documents/{CEO_NOTES}", headers=impostor).status_code == 404
