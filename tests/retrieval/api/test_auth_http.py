"""Authentication over real HTTP: each kind of bad token is a 401, a foreign tenant a 403,
and no body field or header other than the verified token changes who is asking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.retrieval.api.helpers import SECRET, auth, token

QUERY = {"query": "leave policy", "top_k": 10}


def _docs(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {r["doc_id"] for r in response.json()["results"]}


def _rs256_token() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    exp = datetime.now(UTC) + timedelta(hours=1)
    return jwt.encode({"sub": "boss", "groups": ["hr"], "exp": exp}, pem, algorithm="RS256")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: object, payload: object) -> str:
    """Any header and payload, correctly HS256-signed with the server's secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _claims(**extra: object) -> dict[str, object]:
    exp = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    return {"sub": "alice", "groups": ["staff"], "exp": exp, **extra}


BAD_TOKENS = {
    "malformed": "not-a-jwt",
    "three garbage parts": "abc.def.ghi",
    "bad signature": token(secret="another-secret-0123456789-xyzxyzxyzxyz"),
    "expired": token(now=datetime.now(UTC) - timedelta(hours=3), ttl=timedelta(hours=1)),
    "alg none": jwt.encode(
        {"sub": "boss", "exp": datetime.now(UTC) + timedelta(hours=1)}, None, algorithm="none"
    ),
    "rs256 without a configured public key": _rs256_token(),
    "no exp": jwt.encode({"sub": "boss", "groups": ["hr"]}, SECRET, algorithm="HS256"),
    "groups not a list": jwt.encode(
        {"sub": "boss", "groups": "hr", "exp": datetime.now(UTC) + timedelta(hours=1)},
        SECRET,
        algorithm="HS256",
    ),
    # Issue 16.5: these were 500s with a traceback.
    "kid an integer": signed({"alg": "HS256", "kid": 1}, _claims()),
    "kid null": signed({"alg": "HS256", "kid": None}, _claims()),
    "crit extension": signed({"alg": "HS256", "crit": ["x"]}, _claims()),
    "sub with a lone surrogate": signed({"alg": "HS256"}, _claims(sub="al\ud800ice")),
    "tenant with a lone surrogate": signed({"alg": "HS256"}, _claims(tenant="ac\udfffme")),
    "group with a zero-width space": signed({"alg": "HS256"}, _claims(groups=["h\u200br"])),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_on_both_endpoints(http, kind):
    headers = auth(BAD_TOKENS[kind])
    search = http.post("/v1/search", json=QUERY, headers=headers)
    document = http.get("/v1/documents/hb:leave.md", headers=headers)
    for response in (search, document):
        assert response.status_code == 401, (kind, response.text)
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert BAD_TOKENS[kind] not in response.text
        assert "\\ud8" not in response.text and "\\udf" not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer"},
        {"Authorization": ""},
    ],
)
def test_missing_credentials_are_401(http, headers):
    response = http.post("/v1/search", json=QUERY, headers=headers)
    assert response.status_code == 401
    assert "missing bearer token" in response.json()["detail"]
    # RFC 6750 §3.1: no error code when the request carried no token at all.
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_tenant_the_token_does_not_carry_is_403(http):
    acme = token("ann", ("staff",), tenant="acme")
    assert _docs(http.post("/v1/search", json=QUERY, headers=auth(acme))) >= {"acme:plan.md"}
    for extra in ({"X-Trove-Tenant": "globex"}, {"X-Trove-Tenant": ""}):
        response = http.post("/v1/search", json=QUERY, headers={**auth(acme), **extra})
        assert response.status_code == 403, response.text
    body = {**QUERY, "tenant": "globex"}
    assert http.post("/v1/search", json=body, headers=auth(acme)).status_code == 403
    # Asking for one's own tenant is allowed; a token without a tenant may not ask for one.
    same = http.post("/v1/search", json={**QUERY, "tenant": "acme"}, headers=auth(acme))
    assert same.status_code == 200
    # Tenants compare in canonical form, like every other identity.
    spelled = auth(token("ann", ("staff",), tenant="Acme"))
    for header in ("ACME", "Acme"):
        response = http.post(
            "/v1/search", json=QUERY, headers={**spelled, "X-Trove-Tenant": header}
        )
        assert response.status_code == 200, (header, response.text)
    body_spelled = http.post("/v1/search", json={**QUERY, "tenant": "ａｃｍｅ"}, headers=spelled)
    assert body_spelled.status_code == 200
    odd = http.post("/v1/search", json={**QUERY, "tenant": "ac\u200bme"}, headers=spelled)
    assert odd.status_code == 403
    plain = token("alice", ("staff",))
    response = http.get(
        "/v1/documents/acme:plan.md", headers={**auth(plain), "X-Trove-Tenant": "acme"}
    )
    assert response.status_code == 403


def test_tenant_isolation(http):
    acme = _docs(http.post("/v1/search", json=QUERY, headers=auth(token("a", ("staff",), "acme"))))
    globex = _docs(
        http.post("/v1/search", json=QUERY, headers=auth(token("g", ("staff",), "globex")))
    )
    none = _docs(http.post("/v1/search", json=QUERY, headers=auth(token("n", ("staff",)))))
    assert "acme:plan.md" in acme and "globex:plan.md" not in acme
    assert "globex:plan.md" in globex and "acme:plan.md" not in globex
    assert not {"acme:plan.md", "globex:plan.md"} & none
    # Untenanted documents stay readable inside a tenant.
    assert "hb:leave.md" in acme
    acme_token = auth(token("a", ("staff",), "acme"))
    assert http.get("/v1/documents/globex:plan.md", headers=acme_token).status_code == 404
    assert http.get("/v1/documents/acme:plan.md", headers=acme_token).status_code == 200


SPOOF_BODY = {
    "user": "boss",
    "sub": "boss",
    "groups": ["hr", "engineering"],
    "principal": {"user": "boss", "groups": ["hr"]},
    "tenant_id": "acme",
}
SPOOF_HEADERS = {
    "X-Trove-User": "boss",
    "X-User": "boss",
    "X-Forwarded-User": "boss",
    "X-Trove-Groups": "hr,engineering",
    "X-Groups": "hr",
    "Remote-User": "boss",
}


def test_identity_fields_in_body_or_headers_are_ignored(http):
    alice = auth(token("alice", ("staff",)))
    honest = _docs(
        http.post("/v1/search", json={"query": "salary bands board secret runbook"}, headers=alice)
    )
    spoofed = _docs(
        http.post(
            "/v1/search",
            json={"query": "salary bands board secret runbook", **SPOOF_BODY},
            headers={**alice, **SPOOF_HEADERS},
        )
    )
    assert spoofed == honest
    assert not spoofed & {"hr:salary.md", "x:boss.md", "eng:runbook.pdf", "acme:plan.md"}
    for doc in ("hr:salary.md", "x:boss.md"):
        response = http.get(f"/v1/documents/{doc}", headers={**alice, **SPOOF_HEADERS})
        assert response.status_code == 404
    # The same query as the real boss does reach boss's document: the spoof was the only gap.
    boss = _docs(
        http.post(
            "/v1/search",
            json={"query": "salary bands board secret runbook"},
            headers=auth(token("boss", ())),
        )
    )
    assert "x:boss.md" in boss


def test_audit_log_records_who_and_what_without_secrets(http, service):
    secret_query = "parental leave for Jane Doe 555-0100"
    tok = token("audited-user", ("staff",))
    response = http.post("/v1/search", json={"query": secret_query}, headers=auth(tok))
    assert response.status_code == 200
    returned = [c for r in response.json()["results"] for c in r["chunk_ids"]]
    log = service.audit.path.read_text(encoding="utf-8")
    assert tok not in log and secret_query not in log and "Jane" not in log
    import hashlib
    import json

    entries = [json.loads(line) for line in log.splitlines()]
    mine = [e for e in entries if e.get("principal") == "audited-user" and e["event"] == "search"]
    assert len(mine) == 1
    assert mine[0]["query_sha256"] == hashlib.sha256(secret_query.encode()).hexdigest()
    assert mine[0]["chunk_ids"] == returned and mine[0]["latency_ms"] >= 0
    assert "groups" not in mine[0] and "text" not in mine[0]
    for passage in response.json()["results"]:
        assert passage["text"] not in log
    assert any(e["outcome"] == "unauthenticated" for e in entries)
