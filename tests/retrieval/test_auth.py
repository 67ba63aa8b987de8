"""Token verification: HS256, RS256 from a PEM file or a JWKS file, audience and issuer,
and the refusals that must hold whatever the token's header says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings

from core.acl import Principal
from retrieval.auth import AuthConfigError, InvalidTokenError, TokenVerifier, mint_token
from retrieval.config import ApiConfig
from tests.retrieval.token_fuzz import b64, fuzzed_tokens, good_claims, signed

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


IDP = {"jwt_audience": "trove", "jwt_issuer": "https://idp.example"}
IDP_CLAIMS = {"aud": "trove", "iss": "https://idp.example"}


def test_rs256_from_pem_file(tmp_path, rsa_key):
    (tmp_path / "pub.pem").write_text(_pem(rsa_key))
    verifier = TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "pub.pem", **IDP))
    tok = jwt.encode(
        {"sub": "bob", "groups": ["eng"], "exp": _exp(), **IDP_CLAIMS}, rsa_key, algorithm="RS256"
    )
    assert verifier.verify(tok) == Principal.of("bob", ["eng"])
    # The public key is never accepted as an HS256 secret (algorithm confusion).
    forged = jwt.encode({"sub": "bob", "exp": _exp()}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidTokenError, match="algorithm 'HS256' not accepted"):
        verifier.verify(forged)


def test_rs256_from_jwks_by_kid(tmp_path, rsa_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    verifier = TokenVerifier.from_config(ApiConfig(jwks_file=tmp_path / "jwks.json", **IDP))
    claims = {"sub": "carol", "groups": [], "exp": _exp(), **IDP_CLAIMS}
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


# ---------------------------------------------------------------- malformed tokens


def _signed(header: object, payload: object, secret: str = SECRET) -> str:
    return signed(header, payload, secret)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "kid": 1},
        {"alg": "HS256", "kid": None},
        {"alg": "HS256", "kid": []},
        {"alg": "HS256", "kid": ""},
        {"alg": "HS256", "kid": "k" * 10_000},
        {"alg": "HS256", "crit": ["x"]},
        {"alg": "HS256", "crit": ["b64"], "b64": False},
        {"alg": "HS256", "crit": []},
        {"alg": "HS256", "crit": "exp"},
        {"alg": ["HS256"]},
        {"alg": None},
        {"alg": 256},
        {"alg": "hs256"},
        {"alg": "none"},
        {},
        ["HS256"],
        "HS256",
        None,
    ],
    ids=repr,
)
def test_malformed_headers_are_invalid_tokens_even_when_signed(header):
    """Issue 16.5: these headers got a 500 (PyJWT's own InvalidTokenError escaped)."""
    with pytest.raises(InvalidTokenError) as refused:
        TokenVerifier(secret=SECRET).verify(_signed(header, good_claims()))
    assert "k" * 100 not in str(refused.value)


def test_a_deeply_nested_header_is_an_invalid_token():
    nested = "[" * 5_000 + "]" * 5_000
    token = f"{b64(nested.encode())}.{b64(b'{}')}.{b64(b'sig')}"
    with pytest.raises(InvalidTokenError):
        TokenVerifier(secret=SECRET).verify(token)


@pytest.mark.parametrize(
    "raw",
    [
        "a.b.c.d.e",  # a JWE's five parts
        "a.b.",  # an unsecured JWS
        "é.b.c",
        "a b.c.d",
        "a.b.c\n",
        ".b.c",
    ],
)
def test_tokens_not_in_compact_form_are_invalid(raw):
    with pytest.raises(InvalidTokenError, match="malformed"):
        TokenVerifier(secret=SECRET).verify(raw)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 1e400},  # json: Infinity; int(inf) overflows
        {"exp": float("nan")},
        {"exp": "tomorrow"},
        {"iat": "yesterday"},
        {"nbf": []},
        {"iat": 10**400},
        {"jti": 7},
        {"sub": 7},
    ],
    ids=repr,
)
def test_badly_typed_registered_claims_are_invalid(claims):
    with pytest.raises(InvalidTokenError):
        TokenVerifier(secret=SECRET).verify(_signed({"alg": "HS256"}, good_claims(**claims)))


# ---------------------------------------------------------------- identity claims


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"sub": "al\ud800ice"}, "sub"),
        ({"sub": "al\u200bice"}, "sub"),
        ({"sub": "\u202eecila"}, "sub"),
        ({"sub": "a\x00b"}, "sub"),
        ({"sub": "   "}, "sub"),
        ({"sub": "a" * 300}, "sub"),
        ({"sub": ["alice"]}, "sub"),
        ({"tenant": "ac\udc00me"}, "tenant"),
        ({"tenant": "acme\u200d"}, "tenant"),
        ({"tenant": "a" * 300}, "tenant"),
        ({"tenant": ["acme"]}, "tenant"),
        ({"tenant": "  "}, "tenant"),
        ({"groups": ["staff", "h\ud800r"]}, "groups"),
        ({"groups": ["staff", ""]}, "groups"),
        ({"groups": ["g" * 300]}, "groups"),
        ({"groups": {"staff": True}}, "groups"),
        ({"groups": "staff"}, "groups"),
        ({"groups": [["staff"]]}, "groups"),
    ],
    ids=repr,
)
def test_invalid_identity_claims_are_refused_without_echoing_them(claims, reason):
    """Issue 16.5: a lone surrogate in `sub` or `tenant` reached the audit log (a 500)."""
    with pytest.raises(InvalidTokenError, match=reason) as refused:
        TokenVerifier(secret=SECRET).verify(_signed({"alg": "HS256"}, good_claims(**claims)))
    message = str(refused.value)
    for value in claims.values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and text.strip():
                assert text not in message


def test_identity_claims_come_out_canonical():
    claims = good_claims(
        sub="  Ａｌｉｃｅ@Corp.COM ", groups=["Staff", "STAFF", "ＨＲ"], tenant="acme"
    )
    principal = TokenVerifier(secret=SECRET).verify(_signed({"alg": "HS256"}, claims))
    assert principal == Principal.of("alice@corp.com", ["staff", "hr"], "acme")


def test_an_absent_or_null_groups_claim_is_no_groups():
    for claims in (
        good_claims(groups=None),
        {k: v for k, v in good_claims().items() if k != "groups"},
    ):
        principal = TokenVerifier(secret=SECRET).verify(_signed({"alg": "HS256"}, claims))
        assert principal.groups == frozenset()


def test_mint_token_refuses_names_verification_would_refuse():
    with pytest.raises(ValueError, match="U\\+200B"):
        mint_token(SECRET, "al\u200bice")
    with pytest.raises(ValueError, match="U\\+0000"):
        mint_token(SECRET, "alice", ["st\x00aff"])


# ---------------------------------------------------------------- asymmetric keys


def _jwks(tmp_path, *keys: dict) -> ApiConfig:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": list(keys)}))
    return ApiConfig(jwks_file=tmp_path / "jwks.json", **IDP)


def _jwk(key, **fields) -> dict:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), **fields}


def test_asymmetric_keys_need_audience_and_issuer(tmp_path, rsa_key):
    """Issue 16.5: with a public key or JWKS, tokens for any audience or issuer passed."""
    (tmp_path / "pub.pem").write_text(_pem(rsa_key))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(rsa_key, kid="k1")]}))
    keys = [{"jwt_public_key_file": tmp_path / "pub.pem"}, {"jwks_file": tmp_path / "jwks.json"}]
    for key in keys:
        for partial in ({}, {"jwt_audience": "trove"}, {"jwt_issuer": "https://idp"}):
            with pytest.raises(AuthConfigError, match=r"jwt_audience and api\.jwt_issuer"):
                TokenVerifier.from_config(ApiConfig(**key, **partial))
    # A secret alone keeps working without them.
    assert TokenVerifier.from_config(ApiConfig(jwt_secret=SECRET)).audience is None


def test_asymmetric_tokens_must_carry_our_audience_and_issuer(tmp_path, rsa_key):
    (tmp_path / "pub.pem").write_text(_pem(rsa_key))
    verifier = TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "pub.pem", **IDP))
    base = {"sub": "bob", "exp": _exp()}
    for claims, reason in [
        ({**base, "aud": "payroll", "iss": IDP_CLAIMS["iss"]}, "audience"),
        ({**base, "aud": "trove", "iss": "https://other-idp"}, "issuer"),
        ({**base, "iss": IDP_CLAIMS["iss"]}, "aud"),
        ({**base, "aud": "trove"}, "iss"),
        ({**base, "aud": ["payroll", "crm"], "iss": IDP_CLAIMS["iss"]}, "audience"),
        ({**base, "aud": 7, "iss": IDP_CLAIMS["iss"]}, "audience"),
    ]:
        with pytest.raises(InvalidTokenError, match=reason):
            verifier.verify(jwt.encode(claims, rsa_key, algorithm="RS256"))
    listed = {**base, "aud": ["crm", "trove"], "iss": IDP_CLAIMS["iss"]}
    assert verifier.verify(jwt.encode(listed, rsa_key, algorithm="RS256")).user == "bob"


def test_jwks_uses_only_rs256_signing_keys(tmp_path, rsa_key):
    """Issue 16.5: JWKS keys marked `use: enc` or another `alg` were used to verify."""
    others = {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in "abcd"
    }
    config = _jwks(
        tmp_path,
        _jwk(rsa_key, kid="good", use="sig", alg="RS256", key_ops=["verify"]),
        _jwk(others["a"], kid="enc", use="enc"),
        _jwk(others["b"], kid="rs512", alg="RS512"),
        _jwk(others["c"], kid="wrap", key_ops=["wrapKey"]),
        _jwk(others["d"], kid="hs", alg="HS256"),
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
    )
    verifier = TokenVerifier.from_config(config)
    claims = {"sub": "carol", "exp": _exp(), **IDP_CLAIMS}
    assert verifier.verify(jwt.encode(claims, rsa_key, "RS256", headers={"kid": "good"})).user
    for kid, key in [("enc", "a"), ("rs512", "b"), ("wrap", "c"), ("hs", "d")]:
        forged = jwt.encode(claims, others[key], algorithm="RS256", headers={"kid": kid})
        with pytest.raises(InvalidTokenError, match="unknown key id"):
            verifier.verify(forged)


@pytest.mark.parametrize(
    "keys, reason",
    [
        ([{"kid": "e"}], "no RS256 signing key"),
        ("use_enc_only", "no RS256 signing key"),
        ("no_kid", "needs a string `kid`"),
        ("duplicate", "share the kid"),
        ("private", "private key"),
        ("short", "1024 bits"),
        ({"keys": "nope"}, "not a key set"),
    ],
)
def test_jwks_files_that_cannot_be_trusted_are_refused(tmp_path, rsa_key, keys, reason):
    public = _jwk(rsa_key, kid="k1")
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    data = (
        {
            "use_enc_only": {"keys": [{**public, "use": "enc"}]},
            "no_kid": {"keys": [{k: v for k, v in public.items() if k != "kid"}]},
            "duplicate": {"keys": [public, public]},
            "private": {"keys": [{**private, "kid": "k1"}]},
            "short": {"keys": [_jwk(short, kid="k1")]},
        }.get(keys)
        if isinstance(keys, str)
        else keys
    )
    if isinstance(data, list):
        data = {"keys": data}
    (tmp_path / "jwks.json").write_text(json.dumps(data))
    with pytest.raises(AuthConfigError, match=reason):
        TokenVerifier.from_config(ApiConfig(jwks_file=tmp_path / "jwks.json", **IDP))


def test_a_short_or_non_rsa_pem_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "short.pem").write_text(_pem(short))
    with pytest.raises(AuthConfigError, match="1024 bits"):
        TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "short.pem", **IDP))
    (tmp_path / "ec.pem").write_text(_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(AuthConfigError, match="only RSA"):
        TokenVerifier.from_config(ApiConfig(jwt_public_key_file=tmp_path / "ec.pem", **IDP))


def test_hs256_tokens_never_verify_against_public_keys(tmp_path, rsa_key):
    """Algorithm confusion with a JWKS: an HS256 token whose secret is the public key."""
    config = _jwks(tmp_path, _jwk(rsa_key, kid="k1"))
    verifier = TokenVerifier.from_config(config)
    claims = {"sub": "mallory", "exp": int(_exp().timestamp()), **IDP_CLAIMS}
    for secret in (_pem(rsa_key), json.dumps(_jwk(rsa_key, kid="k1"))):
        forged = _signed({"alg": "HS256", "kid": "k1"}, claims, secret=secret)
        with pytest.raises(InvalidTokenError, match="algorithm 'HS256' not accepted"):
            verifier.verify(forged)


# ---------------------------------------------------------------- fuzzing


@settings(max_examples=500, deadline=None, database=None)
@given(fuzzed_tokens(SECRET))
def test_fuzzed_tokens_verify_or_raise_invalid_token_only(tok):
    """Whatever the header and payload hold, the verifier answers a principal or
    InvalidTokenError, and the message never repeats the token."""
    try:
        principal = TokenVerifier(secret=SECRET).verify(tok)
    except InvalidTokenError as refused:
        message = str(refused)
        assert message and (len(tok) < 12 or tok not in message)
        return
    # Accepted: only a correctly signed HS256 token with a canonical identity.
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    assert principal.user == principal.user.strip().casefold()
