"""Token verification: HS256, RS256 from a PEM file or a JWKS file, audience and issuer,
and the refusals that must hold whatever the token's header says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from retrieval.auth import AuthConfigError, InvalidTokenError, TokenVerifier, mint_token
from trove.acl import Principal
from trove.config import ApiConfig

SECRET = "unit-test-secret-0123456789-abcdefgh"


def _exp(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_hs256_round_trip_builds_the_principal():
    verifier = TokenVerifier(secret=SECRET)
    tok = mint_token(SECRET, "alice", ["staff", " hr ", ""], tenant="acme")
    assert verifier.verify(tok) == Principal.of("alice", ["staff", "hr"], "acme")


def test_rs256_from_pem_file(tmp_path, rsa_key):
    (tmp_path / "pub.pem").write_text(_pem(rsa_key))
    verifier = TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "pub.pem"))
    tok = jwt.encode({"sub": "bob", "groups": ["eng"], "exp": _exp()}, rsa_key, algorithm="RS256")
    assert verifier.verify(tok) == Principal.of("bob", ["eng"])
    # The public key is never accepted as an HS256 secret (algorithm confusion).
    forged = jwt.encode({"sub": "bob", "exp": _exp()}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidTokenError, match="algorithm 'HS256' not accepted"):
        verifier.verify(forged)


def test_rs256_from_jwks_by_kid(tmp_path, rsa_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    verifier = TokenVerifier.from_config(ApiConfig(jwks_file=tmp_path / "jwks.json"))
    claims = {"sub": "carol", "groups": [], "exp": _exp()}
    good = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(good).user == "carol"
    unknown = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(InvalidTokenError, match="unknown key id"):
        verifier.verify(unknown)
    wrong_key = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(InvalidTokenError, match="bad token signature"):
        verifier.verify(wrong_key)


def test_audience_and_issuer_are_checked_when_configured():
    verifier = TokenVerifier(secret=SECRET, audience="trove", issuer="https://idp")
    ok = mint_token(SECRET, "a", audience="trove", issuer="https://idp")
    assert verifier.verify(ok).user == "a"
    for bad, reason in [
        (mint_token(SECRET, "a", audience="other", issuer="https://idp"), "audience"),
        (mint_token(SECRET, "a", audience="trove", issuer="https://evil"), "issuer"),
        (mint_token(SECRET, "a", issuer="https://idp"), "aud"),
    ]:
        with pytest.raises(InvalidTokenError, match=reason):
            verifier.verify(bad)


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"groups": ["x"]}, "sub"),
        ({"sub": "", "groups": []}, "sub"),
        ({"sub": "a", "groups": [1, 2]}, "groups"),
        ({"sub": "a", "tenant": 7}, "tenant"),
        ({"sub": "a", "groups": ["g"] * 1001}, "groups"),
    ],
)
def test_malformed_identity_claims_are_refused(claims, reason):
    tok = jwt.encode({**claims, "exp": _exp()}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidTokenError, match=reason):
        TokenVerifier(secret=SECRET).verify(tok)


def test_expiry_with_small_leeway():
    verifier = TokenVerifier(secret=SECRET)
    now = datetime.now(UTC)
    just_expired = mint_token(
        SECRET, "a", ttl=timedelta(seconds=10), now=now - timedelta(seconds=20)
    )
    assert verifier.verify(just_expired).user == "a"  # within the 30 s clock-skew leeway
    long_expired = mint_token(SECRET, "a", ttl=timedelta(minutes=1), now=now - timedelta(hours=1))
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(long_expired)


@pytest.mark.parametrize("value", [None, "", "x" * 20_000, "a.b", "....", "Bearer abc"])
def test_garbage_is_invalid_not_a_crash(value):
    with pytest.raises(InvalidTokenError):
        TokenVerifier(secret=SECRET).verify(value)


def test_configuration_errors(tmp_path):
    with pytest.raises(AuthConfigError, match="no JWT verification key"):
        TokenVerifier.from_config(ApiConfig())
    with pytest.raises(AuthConfigError, match="at least 32"):
        TokenVerifier(secret="short")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(AuthConfigError, match="PEM"):
        TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "bad.pem"))
    with pytest.raises(AuthConfigError, match="cannot read"):
        TokenVerifier.from_config(ApiConfig(jwks_file=tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="ttl"):
        mint_token(SECRET, "a", ttl=timedelta(0))
