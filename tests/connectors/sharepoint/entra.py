"""A loopback Entra ID token service over TLS, for msal's real client-credentials flow.

msal accepts only https authorities, so this is a real TLS server on 127.0.0.1
(pytest-httpserver with an ``ssl.SSLContext``) whose self-signed certificate the
connector trusts through ``authority_ca_bundle`` (msal's ``verify``); msal's
instance discovery (a call to login.microsoftonline.com) is off with
``instance_discovery: false``, msal's documented switch for an authority it
cannot discover. Nothing of msal is replaced: it fetches the OpenID
configuration, builds the request, signs the certificate assertion and caches
the token itself.

What it serves follows Microsoft's published pages:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` — "OpenID Connect on
  the Microsoft identity platform" (learn.microsoft.com/entra/identity-platform/
  v2-protocols-oidc), the document of ``payloads/openid_configuration.json``
  with its endpoints moved to this server.
* ``POST /{tenant}/oauth2/v2.0/token`` — "Microsoft identity platform and the
  OAuth 2.0 client credentials flow" (learn.microsoft.com/entra/identity-platform/
  v2-oauth2-client-creds-grant-flow): form fields ``client_id``, ``scope``
  (``{resource}/.default``), ``grant_type=client_credentials`` and either
  ``client_secret`` or ``client_assertion_type`` =
  ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` with a
  ``client_assertion`` ("Microsoft identity platform application authentication
  certificate credentials": a JWT signed with the certificate's key, ``aud`` the
  token endpoint, ``iss`` = ``sub`` = the client id, ``x5t#S256`` or ``x5t``
  the certificate's thumbprint). The assertion's signature is verified against
  the registered certificate. Success: ``{token_type, expires_in,
  ext_expires_in, access_token}``; errors: ``{error, error_description,
  error_codes, timestamp, trace_id, correlation_id}``.

Tokens are issued through the Graph fake's ``token_provider``, so the Graph
fake accepts exactly the tokens msal obtained here.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import ssl
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.connectors.sharepoint.fake import payload

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def self_signed(common_name: str, *, ip: str | None = None, days: int = 30) -> tuple[bytes, bytes]:
    """``(key PEM, certificate PEM)``: a self-signed certificate (a CA for itself)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class LoopbackEntra:
    """The token service. ``authority`` is what ``sharepoint.authority`` is set to."""

    def __init__(
        self,
        tmp: Path,
        tenant_id: str,
        client_id: str,
        issue: Callable[[str], str],
        *,
        client_secret: str | None = None,
        client_certificate_pem: bytes | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate = (
            x509.load_pem_x509_certificate(client_certificate_pem)
            if client_certificate_pem
            else None
        )
        self._issue = issue
        key_pem, cert_pem = self_signed("127.0.0.1", ip="127.0.0.1")
        (tmp / "entra-key.pem").write_bytes(key_pem)
        self.ca_bundle = tmp / "entra-ca.pem"
        self.ca_bundle.write_bytes(cert_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_bundle, tmp / "entra-key.pem")
        self.server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, form)
        self._lock = threading.Lock()

    def start(self) -> LoopbackEntra:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    def token_posts(self) -> list[dict[str, str]]:
        return [form for method, _, form in self.requests if method == "POST"]

    # -- HTTP -------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        with self._lock:
            self.requests.append((request.method, request.path, form))
        base = f"/{self.tenant_id}"
        if (
            request.method == "GET"
            and request.path == f"{base}/v2.0/.well-known/openid-configuration"
        ):
            return _json(200, self._openid_configuration())
        if request.method == "POST" and request.path == f"{base}/oauth2/v2.0/token":
            status, body = self._token(form)
            return _json(status, body)
        return _json(
            404, _token_error("invalid_request", 900023, "Specified tenant or path is not valid.")
        )

    def _openid_configuration(self) -> dict[str, Any]:
        document = payload("openid_configuration.json")
        real = "https://login.microsoftonline.com"
        text = json.dumps(document).replace(real, self.authority)
        return json.loads(text)

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, _token_error(
                "unsupported_grant_type", 70003, "The grant type is not supported."
            )
        if form.get("client_id") != self.client_id:
            return 400, _token_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found.",
            )
        scope = form.get("scope", "")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            return 400, _token_error(
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier.",
            )
        if "client_secret" in form:
            if self.client_secret is None or form["client_secret"] != self.client_secret:
                return 401, _token_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is "
                    "the client secret value, not the client secret ID.",
                )
        elif form.get("client_assertion_type") == JWT_BEARER:
            problem = self._assertion_problem(form.get("client_assertion", ""))
            if problem:
                return 401, _token_error("invalid_client", 700027, problem)
        else:
            return 401, _token_error(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
            )
        return 200, {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": self._issue(scope),
        }

    def _assertion_problem(self, assertion: str) -> str | None:
        if self.certificate is None:
            return "Client assertion contains an invalid signature. No certificate is registered."
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.certificate.public_key(),
                algorithms=["PS256", "RS256"],
                audience=self.token_endpoint,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return f"Client assertion failed signature validation. ({type(exc).__name__})"
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        thumbprints = {
            "x5t#S256": _b64(hashlib.sha256(der).digest()),
            "x5t": _b64(hashlib.sha1(der).digest()),  # the header's own algorithm
        }
        # base64url; msal keeps the "=" padding that JWS (RFC 7515) leaves out.
        if not any(str(header.get(k, "")).rstrip("=") == v for k, v in thumbprints.items()):
            return (
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application."
            )
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return "The client assertion's iss and sub claims must be the client id."
        return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token_error(code: str, number: int, description: str) -> dict[str, Any]:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return {
        "error": code,
        "error_description": f"AADSTS{number}: {description}\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: 2026-11-20 09:00:00Z",
        "error_codes": [number],
        "timestamp": "2026-11-20 09:00:00Z",
        "trace_id": trace,
        "correlation_id": correlation,
    }


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
