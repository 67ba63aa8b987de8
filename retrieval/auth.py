"""JWT bearer tokens: verified into a :class:`~trove.acl.Principal`, and minted for local use.

A request's identity comes only from a token this module verified; nothing in a
request body or header other than ``Authorization`` can change it.

Accepted tokens:

* **HS256**, signed with ``api.jwt_secret``; or
* **RS256**, verified with ``api.jwt_public_key_file`` (PEM) or a key of
  ``api.jwks_file`` chosen by the token's ``kid``.

The algorithm list is fixed by which keys are configured, never by the token's
own header (RFC 8725 §2.1), so an RS256 public key can never be used as an HS256
secret and ``alg: none`` is always refused. Claims: ``sub`` (the user),
``groups`` (list of strings), optional ``tenant``, and a required ``exp``;
``aud``/``iss`` are checked when configured.

Example::

    verifier = TokenVerifier.from_config(settings.api)
    principal = verifier.verify(token)          # raises InvalidTokenError
    token = mint_token("s3cret", "alice", ["staff"], ttl=timedelta(hours=1))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from trove.acl import Principal
from trove.config import ApiConfig

LEEWAY_S = 30  # clock skew tolerated on exp/nbf/iat
MAX_TOKEN_CHARS = 16_384
MIN_SECRET_CHARS = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits
MAX_GROUPS = 1_000


class AuthError(Exception):
    """Base class of authentication errors."""


class InvalidTokenError(AuthError):
    """The token is missing, malformed, badly signed, expired or lacks a required claim.

    The message names the reason (never the token itself).
    """


class AuthConfigError(AuthError, ValueError):
    """No usable verification key is configured, or a key file is unreadable."""


@dataclass(frozen=True)
class _Keys:
    secret: str | None
    public_keys: tuple[Any, ...]  # PEM-loaded RSA keys, tried in order
    jwks: Mapping[str, Any]  # kid -> key


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"cannot read {what} {path}: {exc}") from exc


def _load_jwks(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read(path, "JWKS file"))
        keyset = jwt.PyJWKSet.from_dict(data)
    except (json.JSONDecodeError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
        raise AuthConfigError(f"JWKS file {path} is not a valid key set: {exc}") from exc
    keys: dict[str, Any] = {}
    for key in keyset.keys:
        if not key.key_id:
            raise AuthConfigError(f"JWKS file {path}: every key needs a `kid`")
        if key.key_type != "RSA":
            raise AuthConfigError(
                f"JWKS file {path}: key {key.key_id!r} is {key.key_type}, only RSA is accepted"
            )
        keys[key.key_id] = key.key
    return keys


class TokenVerifier:
    """Verifies bearer tokens with the configured keys; see the module docstring.

    :raises AuthConfigError: no key configured, a short secret, or an unreadable key file.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_pem: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ):
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise AuthConfigError(
                f"api.jwt_secret must be at least {MIN_SECRET_CHARS} characters, got {len(secret)}"
            )
        public: tuple[Any, ...] = ()
        if public_key_pem is not None:
            public = (_load_pem(public_key_pem),)
        self._keys = _Keys(secret=secret, public_keys=public, jwks=dict(jwks or {}))
        if not (secret or public or self._keys.jwks):
            raise AuthConfigError(
                "no JWT verification key configured: set api.jwt_secret "
                "(or TROVE_API__JWT_SECRET), api.jwt_public_key_file or api.jwks_file"
            )
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_config(cls, api: ApiConfig) -> TokenVerifier:
        secret = api.jwt_secret.get_secret_value() if api.jwt_secret else None
        pem = _read(api.jwt_public_key_file, "JWT public key") if api.jwt_public_key_file else None
        jwks = _load_jwks(api.jwks_file) if api.jwks_file else None
        return cls(
            secret=secret or None,
            public_key_pem=pem,
            jwks=jwks,
            audience=api.jwt_audience,
            issuer=api.jwt_issuer,
        )

    def verify(self, token: str | None) -> Principal:
        """The principal a valid token names; :class:`InvalidTokenError` otherwise."""
        claims = self.claims(token)
        return principal_from_claims(claims)

    def claims(self, token: str | None) -> dict[str, Any]:
        if not token or not isinstance(token, str):
            raise InvalidTokenError("missing bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidTokenError(f"token too long ({len(token)} characters)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise InvalidTokenError(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        key, algorithms = self._key_for(alg, header.get("kid"))
        try:
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidTokenError("bad token signature") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError(f"token lacks a required claim: {exc.claim}") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidTokenError("token audience not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidTokenError("token issuer not accepted") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from exc

    def _key_for(self, alg: Any, kid: Any) -> tuple[Any, list[str]]:
        # The token's header only selects among keys we configured, with the one
        # algorithm each key type allows.
        if alg == "HS256" and self._keys.secret:
            return self._keys.secret, ["HS256"]
        if alg == "RS256":
            if kid is not None and kid in self._keys.jwks:
                return self._keys.jwks[kid], ["RS256"]
            if self._keys.public_keys:
                return self._keys.public_keys[0], ["RS256"]
            if self._keys.jwks:
                raise InvalidTokenError(f"unknown key id {str(kid)[:64]!r}")
        raise InvalidTokenError(f"token algorithm {str(alg)[:16]!r} not accepted")


def _load_pem(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise AuthConfigError(f"api.jwt_public_key_file is not a PEM public key: {exc}") from exc


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build the principal from verified claims; malformed identity claims are refused."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise InvalidTokenError("token `sub` must be a non-empty string")
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidTokenError("token `groups` must be a list of strings")
    if len(groups) > MAX_GROUPS:
        raise InvalidTokenError(f"token carries {len(groups)} groups (at most {MAX_GROUPS})")
    tenant = claims.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidTokenError("token `tenant` must be a string")
    return Principal.of(sub, groups, tenant)


def mint_token(
    secret: str,
    user: str,
    groups: Iterable[str] = (),
    *,
    tenant: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    audience: str | None = None,
    issuer: str | None = None,
    now: datetime | None = None,
) -> str:
    """An HS256 token for ``user`` (``trove token``); for local use and tests."""
    if not user or not user.strip():
        raise ValueError("a token needs a non-empty user")
    if ttl.total_seconds() <= 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    if len(secret) < MIN_SECRET_CHARS:
        raise AuthConfigError(f"the JWT secret must be at least {MIN_SECRET_CHARS} characters")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user,
        "groups": sorted({g.strip() for g in groups if g.strip()}),
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    if tenant:
        claims["tenant"] = tenant
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
