"""Hand-built JWTs for the token tests: any header and payload, correctly HS256-signed,
and a Hypothesis strategy of hostile tokens (random JSON in every header parameter and
claim, half of them signed with the real secret, plus raw garbage)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: object, payload: object, secret: str) -> str:
    """A compact JWS of any ``header`` and ``payload`` with a valid HS256 signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def good_claims(**extra: object) -> dict[str, object]:
    exp = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    return {"sub": "alice", "groups": ["staff"], "exp": exp, **extra}


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)  # lone surrogates, controls and bidi marks included
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADER_KEYS = st.sampled_from(
    ["alg", "kid", "crit", "typ", "cty", "jku", "x5u", "jwk", "x5c", "b64", "zip"]
)
ALGS = st.sampled_from(["HS256", "RS256", "none", "HS512", "ES256", "", "hs256"]) | JSON
CLAIM_KEYS = st.sampled_from(["sub", "groups", "tenant", "exp", "nbf", "iat", "aud", "iss", "jti"])
IDENTITIES = st.sampled_from(
    ["Alice", "ａｌｉｃｅ", "al\u200bice", "al\ud800ice", "a" * 300, "", " ", "\u202eecila"]
) | st.text(max_size=12)


@st.composite
def headers(draw) -> object:
    choice = draw(st.integers(0, 9))
    if choice < 4:
        return {"alg": "HS256", "typ": "JWT"}
    if choice < 9:
        extra = draw(st.dictionaries(HEADER_KEYS, JSON, max_size=3))
        return {**extra, "alg": "HS256" if choice < 7 else draw(ALGS)}
    return draw(JSON)


@st.composite
def payloads(draw) -> object:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(JSON)
    claims = good_claims(**draw(st.dictionaries(CLAIM_KEYS, JSON, max_size=4)))
    if choice >= 2:  # the identity claims, with spellings that are almost right
        claims["sub"] = draw(IDENTITIES)
        claims["groups"] = draw(st.lists(IDENTITIES, max_size=3))
        claims["tenant"] = draw(st.none() | IDENTITIES)
    return claims


@st.composite
def fuzzed_tokens(draw, secret: str) -> str:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.text(max_size=60))
    if choice == 1:
        alphabet = "AZaz09-_=+/.é \t"
        parts = draw(st.lists(st.text(alphabet=alphabet, max_size=30), min_size=1, max_size=6))
        return ".".join(parts)
    try:
        token = signed(draw(headers()), draw(payloads()), secret)
    except (ValueError, UnicodeEncodeError):  # json cannot encode e.g. a surrogate dict key
        return "x.y.z"
    if choice == 2:  # a wrong signature
        head, body, _ = token.split(".")
        return f"{head}.{body}.{draw(st.text(alphabet='AZaz09-_', min_size=1, max_size=43))}"
    return token


def header_safe(token: str) -> bytes:
    """The token as an HTTP header value can carry it (no CR, LF, NUL or other controls)."""
    return "".join(c for c in token if c >= " " and c != "\x7f").encode("utf-8", "surrogatepass")
