"""JWT bearer tokens: verified into a :class:`~core.acl.Principal`, and minted for local use.

A request's identity comes only from a token this module verified; nothing in a
request body or header other than ``Authorization`` can change it.

Accepted tokens:

* **HS256**, signed with ``api.jwt_secret``; or
* **RS256**, verified with ``api.jwt_public_key_file`` (PEM) or a key of
  ``api.jwks_file`` chosen by the token's ``kid``. Only signing keys are loaded
  from a JWKS (``use`` absent or ``sig``, ``key_ops`` absent or with ``verify``,
  ``alg`` absent or ``RS256``), and asymmetric keys need ``api.jwt_audience``
  and ``api.jwt_issuer``: an identity provider's key signs tokens for every
  application it serves, so only ``aud``/``iss`` say a token was meant for Trove.

The algorithm list is fixed by which keys are configured, never by the token's
own header (RFC 8725 §2.1), so an RS256 public key can never be used as an HS256
secret and ``alg: none`` is always refused. A header listing critical extensions
(``crit``) is refused: Trove understands none (RFC 7515 §4.1.11). Header
parameters that point at keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are ignored.

Claims: ``sub`` (the user), ``groups`` (list of strings), optional ``tenant``,
and a required ``exp``; ``aud``/``iss`` are required and checked when configured.
``sub``, each group and the tenant are brought to their canonical form
(:mod:`core.identity`); a claim of the wrong type, too long, or holding a
control, format or surrogate character refuses the whole token.

Every way a token can be wrong raises :class:`InvalidTokenError` (HTTP 401),
whose message names the reason and never repeats the token or a claim verbatim.

Example::

    verifier = TokenVerifier.from_config(settings.api)
    principal = verifier.verify(token)          # raises InvalidTokenError
    token = mint_token("s3cret", "alice", ["staff"], ttl=timedelta(hours=1))
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from core.acl import Principal
from core.errors import TroveError
from core.identity import InvalidIdentity, canonical_group, canonical_tenant, canonical_user
from retrieval.config import ApiConfig

logger = logging.getLogger(__name__)

LEEWAY_S = 30  # clock skew tolerated on exp/nbf/iat
MAX_TOKEN_CHARS = 16_384
MIN_SECRET_CHARS = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits
MIN_RSA_BITS = 2_048  # RFC 7518 §3.3
MAX_GROUPS = 1_000
MAX_KID_CHARS = 256
ASYMMETRIC_ALGORITHM = "RS256"
# RFC 7518 §3.1 names: the only `alg` values an error message repeats.
_JWS_ALGORITHMS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
    | {"PS256", "PS384", "PS512", "EdDSA", "ES256K"}
)

# A JWS in compact serialisation: three non-empty base64url parts. Anything else
# (a JWE's five parts, an unsecured JWS's empty signature, non-ASCII) is refused
# before any of it is decoded.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# What a hostile header or payload can make PyJWT or the JSON decoder raise besides
# its own errors: a non-string `kid`, a deeply nested header, an `exp` of 1e400, ...
_MALFORMED_INPUT_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
    RecursionError,
)

# PyJWT's error classes, most specific first, each with a fixed message: PyJWT's own
# messages can quote header values the caller chose.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid (`nbf` or `iat` in the future)"),
    (jwt.InvalidSignatureError, "bad token signature"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidIssuedAtError, "token `iat` is not a number"),
    (jwt.exceptions.InvalidSubjectError, "token `sub` must be a string"),
    (jwt.exceptions.InvalidJTIError, "token `jti` must be a string"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.DecodeError, "malformed token"),
)


class AuthError(TroveError):
    """Base class of authentication errors."""


class InvalidTokenError(AuthError):
    """The token is missing, malformed, badly signed, expired or lacks a required claim.

    The message names the reason (never the token itself).
    """


class MissingTokenError(InvalidTokenError):
    """No bearer token at all (RFC 6750 §3.1: the challenge then carries no error code)."""


class AuthConfigError(AuthError, ValueError):
    """No usable verification key is configured, or a key file is unreadable."""


@dataclass(frozen=True)
class _Keys:
    secret: str | None
    public_keys: tuple[Any, ...]  # PEM-loaded RSA keys, tried in order
    jwks: Mapping[str, Any]  # kid -> RSA public key (signing keys for RS256 only)

    @property
    def asymmetric(self) -> bool:
        return bool(self.public_keys or self.jwks)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise AuthConfigError(f"cannot read {what} {path}: {exc}") from exc


def _check_rsa_size(key: Any, where: str) -> None:
    size = getattr(key, "key_size", None)
    if size is not None and size < MIN_RSA_BITS:
        raise AuthConfigError(f"{where}: an RSA key of {size} bits; at least {MIN_RSA_BITS}")


def _is_rs256_signing_key(jwk: Mapping[str, Any]) -> bool:
    """RFC 7517 §4.2-4.4: a key may be restricted to encryption or to another algorithm."""
    if jwk.get("kty") != "RSA":
        return False
    if jwk.get("use", "sig") != "sig":
        return False
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return False
    return jwk.get("alg", ASYMMETRIC_ALGORITHM) == ASYMMETRIC_ALGORITHM


def _load_jwks(path: Path) -> dict[str, Any]:
    """The RS256 signing keys of a JWKS file by ``kid``; other keys are skipped."""
    try:
        data = json.loads(_read(path, "JWKS file"))
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"JWKS file {path} is not JSON: {exc}") from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AuthConfigError(f'JWKS file {path} is not a key set ({{"keys": [...]}})')
    keys: dict[str, Any] = {}
    for jwk in entries:
        if "d" in jwk:
            raise AuthConfigError(
                f"JWKS file {path}: key {jwk.get('kid')!r} is a private key; "
                "give the server public keys only"
            )
        if not _is_rs256_signing_key(jwk):
            logger.info(
                "JWKS file %s: skipping key %r (kty=%r use=%r alg=%r): not an RS256 signing key",
                path,
                jwk.get("kid"),
                jwk.get("kty"),
                jwk.get("use"),
                jwk.get("alg"),
            )
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise AuthConfigError(f"JWKS file {path}: every signing key needs a string `kid`")
        if kid in keys:
            raise AuthConfigError(f"JWKS file {path}: two signing keys share the kid {kid!r}")
        try:
            key = jwt.PyJWK(jwk, algorithm=ASYMMETRIC_ALGORITHM).key
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            raise AuthConfigError(f"JWKS file {path}: key {kid!r} is not valid: {exc}") from exc
        _check_rsa_size(key, f"JWKS file {path}, key {kid!r}")
        keys[kid] = key
    if not keys:
        raise AuthConfigError(
            f"JWKS file {path} holds no RS256 signing key (kty RSA, use `sig` or absent, "
            "alg RS256 or absent)"
        )
    return keys


class TokenVerifier:
    """Verifies bearer tokens with the configured keys; see the module docstring.

    :raises AuthConfigError: no key configured, a short secret or RSA key, an unreadable
        key file, or asymmetric keys without both ``audience`` and ``issuer``.
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
        if not (secret or self._keys.asymmetric):
            raise AuthConfigError(
                "no JWT verification key configured: set api.jwt_secret "
                "(or TROVE_API__JWT_SECRET), api.jwt_public_key_file or api.jwks_file"
            )
        if self._keys.asymmetric and not (audience and issuer):
            raise AuthConfigError(
                "api.jwt_public_key_file and api.jwks_file need api.jwt_audience and "
                "api.jwt_issuer: an identity provider's key also signs tokens for its other "
                "applications, and only `aud` and `iss` tell that a token was issued for Trove"
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
        """The verified claims of ``token``; :class:`InvalidTokenError` whatever is wrong."""
        token = _check_shape(token)
        try:
            header = _checked_header(_unverified_header(token))
            key, algorithms = self._key_for(header["alg"], header.get("kid"))
            return self._decode(token, key, algorithms)
        except InvalidTokenError:
            raise
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(_reason(exc)) from exc
        except _MALFORMED_INPUT_ERRORS as exc:
            raise InvalidTokenError("malformed token") from exc

    def _decode(self, token: str, key: Any, algorithms: list[str]) -> dict[str, Any]:
        required = ["exp", "sub"]
        if self.audience is not None:
            required.append("aud")
        if self.issuer is not None:
            required.append("iss")
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_S,
            options={"require": required, "verify_aud": self.audience is not None},
        )

    def _key_for(self, alg: str, kid: str | None) -> tuple[Any, list[str]]:
        # The token's header only selects among keys we configured, with the one
        # algorithm each key type allows.
        if alg == "HS256" and self._keys.secret:
            return self._keys.secret, ["HS256"]
        if alg == ASYMMETRIC_ALGORITHM:
            if kid is not None and kid in self._keys.jwks:
                return self._keys.jwks[kid], [ASYMMETRIC_ALGORITHM]
            if self._keys.public_keys:
                return self._keys.public_keys[0], [ASYMMETRIC_ALGORITHM]
            if self._keys.jwks:
                raise InvalidTokenError("unknown key id: the token's `kid` names no configured key")
        named = repr(alg) if alg in _JWS_ALGORITHMS else "(unknown)"
        raise InvalidTokenError(f"token algorithm {named} not accepted")


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks a required claim: {exc.claim}"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"invalid token ({type(exc).__name__})"


def _check_shape(token: object) -> str:
    if not token or not isinstance(token, str):
        raise MissingTokenError("missing bearer token")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidTokenError(f"token too long ({len(token)} characters)")
    if not _COMPACT_JWS.fullmatch(token):
        raise InvalidTokenError("malformed token: not three base64url parts")
    return token


def _unverified_header(token: str) -> object:
    # Read here rather than by PyJWT, whose header checks raise before ours can name
    # the problem; PyJWT reads it again, and checks it again, when it verifies.
    encoded = token.split(".", 1)[0]
    try:
        return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError) as exc:  # binascii, UTF-8 and JSON errors
        raise InvalidTokenError("malformed token: the header is not base64url JSON") from exc


def _checked_header(header: object) -> dict[str, Any]:
    """The header's ``alg`` and ``kid`` typed as used; ``crit`` refused."""
    if not isinstance(header, dict):
        raise InvalidTokenError("malformed token: the header is not a JSON object")
    if "crit" in header:
        raise InvalidTokenError("token header lists critical extensions (`crit`): none supported")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise InvalidTokenError("token header `alg` must be a non-empty string")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
        raise InvalidTokenError(
            f"token header `kid` must be a string of 1 to {MAX_KID_CHARS} characters"
        )
    return header


def _load_pem(pem: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise AuthConfigError(f"api.jwt_public_key_file is not a PEM public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthConfigError(
            f"api.jwt_public_key_file holds a {type(key).__name__}; only RSA (RS256) is accepted"
        )
    _check_rsa_size(key, "api.jwt_public_key_file")
    return key


def _identity_claim(
    claims: Mapping[str, Any], name: str, canonical: Callable[[object], str]
) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise InvalidTokenError(f"token `{name}` must be a string")
    try:
        return canonical(value)
    except InvalidIdentity as exc:
        # The identity module's messages name a code point, never the value itself.
        raise InvalidTokenError(f"token `{name}` is not valid: {exc}") from exc


def _tenant_claim(claims: Mapping[str, Any]) -> str | None:
    """The tenant in canonical form, as chunk ACLs hold theirs; absent or ``""``: none."""
    tenant = claims.get("tenant")
    if tenant is None or tenant == "":
        return None
    return _identity_claim(claims, "tenant", canonical_tenant)


_USER_TOKEN_MARK = ":user:"


def _groups_claim(claims: Mapping[str, Any]) -> list[str]:
    groups = claims.get("groups", [])
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise InvalidTokenError("token `groups` must be a list of strings")
    if len(groups) > MAX_GROUPS:
        raise InvalidTokenError(f"token carries {len(groups)} groups (at most {MAX_GROUPS})")
    out = []
    for position, group in enumerate(groups):
        if not isinstance(group, str):
            raise InvalidTokenError("token `groups` must be a list of strings")
        try:
            canonical = canonical_group(group)
        except InvalidIdentity as exc:
            raise InvalidTokenError(f"token `groups` entry {position} is not valid: {exc}") from exc
        # A `{source}:user:{id}` token stands for one person and is granted only
        # through the directory's mapping of the verified `sub`; from the groups
        # claim (whose names some IdPs let users choose) it would let anyone act
        # as that person. Dropping it only narrows what the caller may read.
        if _USER_TOKEN_MARK not in canonical:
            out.append(canonical)
    return out


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build the principal from verified claims; malformed identity claims are refused.

    ``sub``, ``groups`` and ``tenant`` are canonicalised (:mod:`core.identity`), so every
    spelling of one user is one principal: the same ACL decisions and the same rate limit.
    """
    user = _identity_claim(claims, "sub", canonical_user)
    groups = _groups_claim(claims)
    tenant = _tenant_claim(claims)
    try:
        return Principal.of(user, groups, tenant)
    except ValueError as exc:  # the principal's own checks; the claims passed ours
        raise InvalidTokenError(f"token identity not accepted: {exc}") from exc


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
    """An HS256 token for ``user`` (``trove token``); for local use and tests.

    :raises ValueError: an empty or invalid user or group name, or a non-positive ``ttl``.
    """
    if not user or not user.strip():
        raise ValueError("a token needs a non-empty user")
    if ttl.total_seconds() <= 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    if len(secret) < MIN_SECRET_CHARS:
        raise AuthConfigError(f"the JWT secret must be at least {MIN_SECRET_CHARS} characters")
    # Refuse here what verification would refuse, rather than print a useless token.
    canonical_user(user)
    kept = sorted({g.strip() for g in groups if g.strip()})
    for group in kept:
        canonical_group(group)
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user,
        "groups": kept,
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
