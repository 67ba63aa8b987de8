"""App-only access tokens for Microsoft Graph and SharePoint REST.

A token provider is any callable ``provider(scope) -> access token``; the
scope is a resource's ``.default`` scope, because Graph
(``https://graph.microsoft.com/.default``) and SharePoint REST
(``https://{tenant}.sharepoint.com/.default``, for site groups) need different
tokens. The connector accepts an injected provider, so tests need no Entra ID.

Two implementations:

* :class:`MsalTokenProvider` (production): msal's
  ``ConfidentialClientApplication.acquire_token_for_client``, which caches
  tokens per scope and renews them before they expire. The application is
  built on first use, because msal fetches the authority's OpenID metadata in
  its constructor (a connector that is only configured must not call out).
* :class:`ClientCredentialsTokenProvider`: the same OAuth 2.0 client-credentials
  grant as one form POST to an explicit ``token_url`` (test doubles, token
  proxies). Used only when ``token_url`` is configured; see
  :mod:`connectors.sharepoint.config` for the https/loopback guard.

Errors never carry the secret or the token: an Entra refusal becomes
:class:`~connectors.http.SourceAuthError` with Entra's error code and
description, which name the problem (``invalid_client``, ``AADSTS7000215``…)
without echoing credentials.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from connectors.errors import ConnectorError
from connectors.http import RETRY_STATUSES, HttpClient, SourceAuthError, SourceUnavailable
from connectors.sharepoint.config import SharePointConfig

log = logging.getLogger(__name__)

_EXPIRY_MARGIN_S = 120.0
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TokenProvider(Protocol):
    def __call__(self, scope: str) -> str: ...


def resource_scope(url: str) -> str:
    """The ``.default`` scope of the resource that serves ``url`` (scheme and host)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/.default"


def _describe(result: dict[str, Any]) -> str:
    code = str(result.get("error") or "unknown_error")
    description = str(result.get("error_description") or "").splitlines()
    return f"{code}: {description[0]}" if description else code


class MsalTokenProvider:
    """Client-credentials tokens from msal (secret or certificate), cached per scope by msal."""

    def __init__(self, config: SharePointConfig) -> None:
        self._config = config
        self._app: Any = None
        self._lock = threading.Lock()

    def _credential(self) -> Any:
        cfg = self._config
        if cfg.client_certificate is not None:
            pem = cfg.client_certificate.read()
            certificates = _CERT_BLOCK.findall(pem)
            if not certificates or "PRIVATE KEY-----" not in pem:
                raise ConnectorError(
                    f"client_certificate ({cfg.client_certificate.where()}) must be a PEM "
                    "holding the private key and its certificate"
                )
            return {"private_key": pem, "public_certificate": certificates[0]}
        assert cfg.client_secret is not None  # the config validator guarantees one credential
        return cfg.client_secret.read()

    def _application(self) -> Any:
        if self._app is None:
            import msal  # imported on first use: only production runs need it

            cfg = self._config
            try:
                self._app = msal.ConfidentialClientApplication(
                    cfg.client_id,
                    client_credential=self._credential(),
                    authority=f"{cfg.authority}/{cfg.tenant_id}",
                    # Off only for an authority msal cannot discover (config docs).
                    instance_discovery=None if cfg.instance_discovery else False,
                    http_client=_trusting(cfg.authority_ca_bundle),
                )
            except ValueError as exc:  # msal: unknown tenant, bad authority, bad key
                raise SourceAuthError(f"Entra ID rejected the application setup: {exc}") from None
            except OSError as exc:  # requests' errors are OSErrors (ConnectionError...)
                raise SourceUnavailable(
                    f"cannot reach the Entra ID authority {cfg.authority}: {type(exc).__name__}"
                ) from None
        return self._app

    def __call__(self, scope: str) -> str:
        with self._lock:
            app = self._application()
            try:
                result = app.acquire_token_for_client(scopes=[scope])
            except OSError as exc:
                raise SourceUnavailable(
                    f"cannot reach Entra ID for a {scope} token: {type(exc).__name__}"
                ) from None
        if not isinstance(result, dict) or "access_token" not in result:
            raise SourceAuthError(
                f"Entra ID refused a token for {scope} (client {self._config.client_id}): "
                f"{_describe(result if isinstance(result, dict) else {})}"
            )
        return str(result["access_token"])


def _trusting(ca_bundle: str | None) -> Any:
    """A requests session that trusts ``ca_bundle`` for the authority (``None``: msal's own).

    Set per request: requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the
    environment override a session's ``verify`` (psf/requests#3829), which would
    silently drop the configured bundle.
    """
    if not ca_bundle:
        return None
    import functools

    import requests

    session = requests.Session()
    session.verify = ca_bundle
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, verify=ca_bundle, timeout=60
    )
    return session


class ClientCredentialsTokenProvider:
    """The client-credentials grant as a plain form POST to ``token_url``, cached per scope."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        secret: Callable[[], str],
        http: HttpClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = token_url
        self._client_id = client_id
        self._secret = secret
        self._http = http
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, scope: str) -> str:
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached[1] > self._clock():
                return cached[0]
            form = {
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._secret(),
                "scope": scope,
            }
            headers = {"Accept": "application/json"}
            try:
                # Entra explains a refusal (401 invalid_client...) in the body, which
                # HttpClient's 401 error drops: the first attempt is read directly and
                # only throttling or server errors go through HttpClient's retries.
                try:
                    first: httpx.Response | None = self._http.client.request(
                        "POST", self._url, data=form, headers=headers
                    )
                except httpx.TransportError:
                    first = None
                if first is None or first.status_code in RETRY_STATUSES:
                    response = self._http.request("POST", self._url, data=form, headers=headers)
                else:
                    response = first
            except httpx.HTTPError as exc:
                raise SourceUnavailable(
                    f"token request to {self._url} failed: {type(exc).__name__}"
                ) from None
            try:
                body = response.json()
            except ValueError:
                body = {}
            if response.status_code != 200 or "access_token" not in body:
                raise SourceAuthError(
                    f"token endpoint {self._url} refused client {self._client_id} for {scope} "
                    f"(status {response.status_code}): {_describe(body)}"
                )
            lifetime = float(body.get("expires_in") or 3600)
            token = str(body["access_token"])
            self._cache[scope] = (token, self._clock() + max(0.0, lifetime - _EXPIRY_MARGIN_S))
            return token


def make_token_provider(config: SharePointConfig, http: HttpClient) -> TokenProvider:
    """msal in production; the plain POST only when ``token_url`` is configured."""
    if config.token_url is not None:
        secret = config.client_secret
        assert secret is not None  # the config validator ties token_url to a secret
        return ClientCredentialsTokenProvider(config.token_url, config.client_id, secret.read, http)
    return MsalTokenProvider(config)
