"""Tokens: msal offline (secret and certificate, via `responses`), the token_url path, config."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import responses
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from connectors.http import SourceAuthError
from connectors.sharepoint.auth import MsalTokenProvider, make_token_provider, resource_scope
from connectors.sharepoint.config import SharePointConfig
from connectors.sharepoint.connector import SharePointConnector
from pipelines.config import SourceConfig
from tests.connectors.sharepoint.fake import CLIENT_ID, TENANT_ID, make_source_config, payload
from trove.config import load_settings

AUTHORITY = f"https://login.microsoftonline.com/{TENANT_ID}"
OPENID = f"{AUTHORITY}/v2.0/.well-known/openid-configuration"
TOKEN = f"{AUTHORITY}/oauth2/v2.0/token"
DISCOVERY = "https://login.microsoftonline.com/common/discovery/instance"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def config(**kw) -> SharePointConfig:
    base = {
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "sites": ["contoso.sharepoint.com:/sites/eng"],
    }
    return SharePointConfig.model_validate({**base, **kw})


def token_posts() -> list[dict[str, list[str]]]:
    return [parse_qs(c.request.body) for c in responses.calls if c.request.method == "POST"]


@responses.activate
def test_msal_client_secret_path_runs_offline(monkeypatch):
    monkeypatch.setenv("SP_TEST_SECRET", "msal-secret-value")
    responses.get(OPENID, json=payload("openid_configuration.json"))
    responses.post(TOKEN, json=payload("token_response.json"))
    provider = MsalTokenProvider(config(client_secret={"env": "SP_TEST_SECRET"}))
    assert len(responses.calls) == 0  # msal is built on first use, not when configured

    token = provider(GRAPH_SCOPE)
    again = provider(GRAPH_SCOPE)

    assert token == again == payload("token_response.json")["access_token"]
    (post,) = token_posts()  # the second token came from msal's cache
    assert post["grant_type"] == ["client_credentials"]
    assert post["client_id"] == [CLIENT_ID]
    assert post["client_secret"] == ["msal-secret-value"]
    assert post["scope"][0].split() == [GRAPH_SCOPE]
    assert any(c.request.url.startswith(OPENID) for c in responses.calls)


@responses.activate
def test_msal_refusal_is_an_auth_error_without_the_secret(monkeypatch):
    monkeypatch.setenv("SP_TEST_SECRET", "msal-secret-value")
    responses.get(OPENID, json=payload("openid_configuration.json"))
    responses.post(TOKEN, status=401, json=payload("token_error_invalid_client.json"))
    # On an error msal looks up the instance metadata (aliases) once.
    responses.get(DISCOVERY, json=payload("instance_discovery.json"))
    provider = MsalTokenProvider(config(client_secret={"env": "SP_TEST_SECRET"}))

    with pytest.raises(SourceAuthError, match="invalid_client: AADSTS7000215") as refused:
        provider(GRAPH_SCOPE)
    assert "msal-secret-value" not in str(refused.value)


def _certificate_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trove-sharepoint")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode()


@responses.activate
def test_msal_certificate_path_signs_a_client_assertion(tmp_path):
    pem = tmp_path / "app.pem"
    pem.write_text(_certificate_pem())
    responses.get(OPENID, json=payload("openid_configuration.json"))
    responses.post(TOKEN, json=payload("token_response.json"))
    provider = MsalTokenProvider(config(client_certificate={"file": str(pem)}))

    provider("https://contoso.sharepoint.com/.default")

    (post,) = token_posts()
    assert "client_secret" not in post
    assert post["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    header = post["client_assertion"][0].split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert decoded["alg"] == "PS256" and "x5t#S256" in decoded
    assert post["scope"][0].split() == ["https://contoso.sharepoint.com/.default"]


@responses.activate
def test_the_connector_uses_msal_when_no_token_url_is_set(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("SP_TEST_SECRET", fake.client_secret)
    token = payload("token_response.json")["access_token"]
    fake._tokens[token] = fake.graph_scope  # the fake Graph accepts msal's (mocked) token
    responses.get(OPENID, json=payload("openid_configuration.json"))
    responses.post(TOKEN, json=payload("token_response.json"))
    block = make_source_config(fake, "sp", tmp_path)
    del block["sharepoint"]["token_url"]
    block["sharepoint"]["client_secret"] = {"env": "SP_TEST_SECRET"}

    config = SourceConfig.model_validate(block)
    connector = SharePointConnector(config.scope(), config.sharepoint, sleep=lambda s: None)
    docs = [d for b in connector.changes(None) for d in b.documents]

    assert len(docs) == 4
    (post,) = token_posts()
    assert post["scope"][0].split() == [fake.graph_scope]
    assert not fake.requests_to(r"/oauth2/")  # the fake's token endpoint was not used
    assert all(
        r.authorization == f"Bearer {token}" for r in fake.requests_to(r"^/v1\.0/") if not r.inner
    )


def test_token_url_provider_posts_client_credentials_and_caches(fake, connector):
    provider = connector.graph._tokens
    first = provider(fake.graph_scope)
    assert provider(fake.graph_scope) == first
    other = provider(fake.sharepoint_scope)
    assert other != first
    posts = fake.requests_to(r"/oauth2/v2\.0/token$")
    assert len(posts) == 2
    form = parse_qs(posts[0].body.decode())
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == [fake.graph_scope]


def test_config_guards():
    secret = {"env": "X"}
    assert make_token_provider(config(client_secret=secret), None).__class__ is MsalTokenProvider
    with pytest.raises(ValidationError, match="exactly one of"):
        config()
    with pytest.raises(ValidationError, match="must be https"):
        config(client_secret=secret, token_url="http://tokens.example.com/token")
    with pytest.raises(ValidationError, match="with `client_secret` only"):
        config(client_certificate={"file": "/x.pem"}, token_url="http://127.0.0.1:1/t")
    with pytest.raises(ValidationError, match="must be an https URL"):
        config(client_secret=secret, graph_url="http://graph.example.com/v1.0")
    with pytest.raises(ValidationError, match="host:/sites/path"):
        config(client_secret=secret, sites=["https://contoso.sharepoint.com/sites/eng"])
    with pytest.raises(ValidationError, match="at least one entry"):
        config(client_secret=secret, sites=[])
    assert resource_scope("https://contoso.sharepoint.com/sites/eng") == (
        "https://contoso.sharepoint.com/.default"
    )


def test_a_trove_yaml_source_reaches_the_fake_without_code_injection(fake, tmp_path):
    source = make_source_config(fake, "sharepoint-eng", tmp_path)
    (tmp_path / "trove.yaml").write_text(yaml.safe_dump({"sources": [source]}))

    settings = load_settings(tmp_path / "trove.yaml")
    source = settings.source("sharepoint-eng")
    connector = SharePointConnector(source.scope(), source.sharepoint)
    try:
        docs = [d for b in connector.changes(None) for d in b.documents]
    finally:
        connector.close()

    assert len(docs) == 4
    assert all(d.doc_id.startswith("sharepoint-eng:") for d in docs)
