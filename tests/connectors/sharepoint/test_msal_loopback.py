"""msal's real client-credentials flow (secret and certificate) against a loopback Entra.

Regression for issue 18, item 8: the sign-in path was never exercised (a
``token_url`` hook replaced msal). Here nothing is replaced: msal fetches the
OpenID configuration over TLS, posts the grant, signs the certificate assertion
and caches tokens; the loopback service (``entra.py``) checks each request as
Microsoft's client-credentials page describes and verifies the assertion's
signature against the registered certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.http import SourceAuthError, SourceUnavailable
from connectors.sharepoint.connector import SharePointConnector
from pipelines.config import SourceConfig
from tests.connectors.sharepoint.entra import JWT_BEARER, LoopbackEntra, self_signed
from tests.connectors.sharepoint.fake import FakeSharePoint, make_source_config


@pytest.fixture
def entra_for(fake: FakeSharePoint, tmp_path: Path) -> Iterator[Callable[..., LoopbackEntra]]:
    started: list[LoopbackEntra] = []

    def start(**credentials: object) -> LoopbackEntra:
        service = LoopbackEntra(
            tmp_path, fake.tenant_id, fake.client_id, fake.token_provider, **credentials
        ).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def _connector(
    fake: FakeSharePoint, entra: LoopbackEntra, tmp_path: Path, *, trust: bool = True, **block
) -> SharePointConnector:
    source = make_source_config(fake, "sp", tmp_path)
    settings = source["sharepoint"]
    del settings["token_url"]  # msal, as in production
    settings.update(authority=entra.authority, instance_discovery=False)
    if trust:
        settings["authority_ca_bundle"] = str(entra.ca_bundle)
    settings.update(block)
    config = SourceConfig.model_validate(source)
    return SharePointConnector(config.scope(), config.sharepoint, sleep=lambda _: None)


def _certificate(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    key_pem, cert_pem = self_signed(name)
    path = tmp_path / f"{name}.pem"
    path.write_bytes(key_pem + cert_pem)
    return path, cert_pem


def test_client_secret_sign_in_through_msal(fake, entra_for, tmp_path):
    entra = entra_for(client_secret=fake.client_secret)
    connector = _connector(fake, entra, tmp_path)
    try:
        docs = [d for b in connector.changes(None) for d in b.documents]
        snapshot = connector.sync_groups()  # site groups: a SharePoint-scoped token too
    finally:
        connector.close()

    assert len(docs) == 4 and snapshot.members
    gets = [path for method, path, _ in entra.requests if method == "GET"]
    assert gets == [f"/{fake.tenant_id}/v2.0/.well-known/openid-configuration"]
    posts = entra.token_posts()
    # One grant per resource: msal served every later Graph call from its cache.
    assert sorted(p["scope"] for p in posts) == sorted([fake.graph_scope, fake.sharepoint_scope])
    assert all(p["client_secret"] == fake.client_secret for p in posts)
    assert all(p["grant_type"] == "client_credentials" for p in posts)
    assert not fake.requests_to(r"/oauth2/")  # the plain token_url path was not used
    assert len(fake.requests_to(r"^/v1\.0/")) > len(posts)


def test_certificate_sign_in_through_msal(fake, entra_for, tmp_path):
    pem, cert = _certificate(tmp_path, "trove-app")
    entra = entra_for(client_certificate_pem=cert)
    connector = _connector(
        fake, entra, tmp_path, client_secret=None, client_certificate={"file": str(pem)}
    )
    try:
        docs = [d for b in connector.changes(None) for d in b.documents]
    finally:
        connector.close()

    assert len(docs) == 4
    (post,) = entra.token_posts()
    assert "client_secret" not in post
    assert post["client_assertion_type"] == JWT_BEARER  # verified by the service


def test_a_wrong_secret_is_refused_without_echoing_it(fake, entra_for, tmp_path, monkeypatch):
    entra = entra_for(client_secret=fake.client_secret)
    monkeypatch.setenv("SP_WRONG_SECRET", "not-the-secret-xyz")
    connector = _connector(fake, entra, tmp_path, client_secret={"env": "SP_WRONG_SECRET"})
    with pytest.raises(SourceAuthError, match="invalid_client: AADSTS7000215") as refused:
        list(connector.changes(None))
    assert "not-the-secret-xyz" not in str(refused.value)
    assert not fake.requests_to(r"^/v1\.0/")  # nothing reached Graph


def test_an_unregistered_certificate_is_refused(fake, entra_for, tmp_path):
    _, registered = _certificate(tmp_path, "registered")
    other, _ = _certificate(tmp_path, "stranger")
    entra = entra_for(client_certificate_pem=registered)
    connector = _connector(
        fake, entra, tmp_path, client_secret=None, client_certificate={"file": str(other)}
    )
    with pytest.raises(SourceAuthError, match="invalid_client: AADSTS700027"):
        list(connector.changes(None))


def test_an_authority_whose_certificate_is_not_trusted_is_not_reached(fake, entra_for, tmp_path):
    entra = entra_for(client_secret=fake.client_secret)
    connector = _connector(fake, entra, tmp_path, trust=False)
    with pytest.raises(SourceUnavailable, match="cannot reach the Entra ID authority"):
        list(connector.changes(None))
    assert not entra.token_posts()
