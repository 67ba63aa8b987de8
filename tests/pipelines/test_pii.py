"""PII and secret detection: true positives on fake values, no false positives on busy text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from pipelines.config import PII_TYPES
from pipelines.models import Chunk
from pipelines.pii import (
    Finding,
    apply_policy,
    assert_no_values,
    counts,
    detect,
    iban_valid,
    luhn_valid,
    placeholder,
    redact,
)


def luhn_complete(prefix: str, length: int) -> str:
    """A Luhn-valid number of ``length`` digits: ``prefix``, zero padding, check digit."""
    body = prefix + "0" * (length - len(prefix) - 1)
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct mod-97 check digits for ``bban``."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


FAKE_PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "LsP8ZOZMe7PkDP1xJqU6b1zl7Y8l0eQ==\n"
    "-----END RSA PRIVATE KEY-----"
)

# (type, fake value) pairs that must be found exactly, span and all.
POSITIVES: list[tuple[str, str]] = [
    ("email", "john.doe@example.com"),
    ("email", "ops+alerts@mail.example.co.uk"),
    ("phone", "(555) 123-4567"),
    ("phone", "555-123-4567"),
    ("phone", "555.123.4567"),
    ("phone", "1-555-123-4567"),
    ("phone", "+14155552671"),
    ("phone", "+1 415 555 2671"),
    ("phone", "+31 6 1234 5678"),
    ("phone", "+44 (0)20 7946 0958"),
    ("phone", "+49 30 12345678"),
    ("phone", "+33 1 23 45 67 89"),
    ("phone", "020 7946 0958"),
    ("phone", "06 1234 5678"),
    ("phone", "030 12345678"),
    ("us_ssn", "123-45-6789"),
    ("us_ssn", "078-05-1120"),
    ("payment_card", "4111 1111 1111 1111"),
    ("payment_card", "4111-1111-1111-1111"),
    ("payment_card", "5555555555554444"),
    ("payment_card", "3782 822463 10005"),
    ("payment_card", "6011111111111117"),
    ("payment_card", luhn_complete("2221", 16)),
    ("payment_card", luhn_complete("4", 13)),
    ("payment_card", luhn_complete("62", 19)),
    ("iban", "GB82WEST12345698765432"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "NL91ABNA0417164300"),
    ("iban", "FR1420041010050500013M02606"),
    ("iban", make_iban("NO", "86011117947")),
    ("api_key", "AKIAIOSFODNN7EXAMPLE"),
    ("api_key", "ASIAY34FZKBOKMUTVV7A"),
    ("api_key", "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    ("api_key", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("api_key", "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"),
    ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("api_key", "rk_live_51H8abcDEF1234567890xyz"),
    ("api_key", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("api_key", "sk-proj-abcDEF1234567890ghiJKLmnoPQR"),
    (
        "api_key",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("private_key", FAKE_PEM),
    (
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
        "-----END OPENSSH PRIVATE KEY-----",
    ),
]

# Secrets recognised only through the key-like name in front: (prefix, value).
KEYED_SECRETS: list[tuple[str, str]] = [
    ("aws_secret_access_key = ", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ('"api_key": "', "3f786850e387550fdd9a5e8a3b2c6e1f0d1a2b3c"),
    ("token: ", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"),
    ("SECRET=", "q8F2vN7xL0pR4tY6wK1mZ3cB9dH5jS"),
    ("password: ", "Tr0ub4dor&3xK9pLmQ2vR7nW".replace("&", "")),
    ("Authorization: Bearer ", "a1b2C3d4E5f6G7h8I9j0K1l2M3n4"),
]

# Busy enterprise text that holds no personal data or secret.
BENIGN: list[str] = [
    "The Q3 budget is $1,234,567.89 (up 12.5% from 2023); invoice INV-2024-000123 is due.",
    "Meeting on 2024-01-15 at 10:30, moved to 15/01/2024 14:00, then 01.02.2024 09:15.",
    "Deployed at 2024-01-15T10:30:00Z and 2024-01-15T10:30:00.123+01:00 without incident.",
    "Upgrade from v2.14.3 to 3.0.0-rc.1; python 3.11.7, numpy 2.4.0, build 20240115.3.",
    "Order numbers 5551234567, 4155552671 and 00493012345678 ship tomorrow.",
    "Customer id 12345678901234567890 and account 4111111111111112 (not Luhn-valid).",
    "Hosts 192.168.1.10, 10.0.0.255 and 2001:db8::8a2e:370:7334 behind 203.0.113.7:8443.",
    "Request id 123e4567-e89b-12d3-a456-426614174000 traced through the gateway.",
    "Fixed in commit 3f786850e387550fdd9a5e8a3b2c6e1f0d1a2b3c (short 3f78685).",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 verified.",
    "Pi is 3.14159265 and e is 2.71828182; the ratio was +3.14159265 last run.",
    "Range 100-200-3000 units; part 123-4567; SKU 12-3456-7890-12.",
    "Population grew from 1990 to 2020 by 1,000,000; see table 4.2.1 on page 17.",
    "Ticket JIRA-12345 and PR #6789 reference doc ISO 8601 and RFC 3339.",
    "Use max_tokens = settings.embedding.max_tokens_per_chunk for the token: budget.",
    "The tokenizer: sentence-transformers/all-MiniLM-L6-v2 keeps a password: policy doc.",
    "password: hunter2 is too short and token = short-value is fine.",
    "api_key = os.environ['API_KEY'] and secret_key: /etc/trove/secret/keyfile.pem",
    "Serial numbers 000-12-3456, 666-12-3456 and 923-45-6789 are not SSNs.",
    "The logo@2x.png asset and @mentions like @alice are not addresses.",
    "Coordinates 52.3676, 4.9041; temperature -12.5 C; ratio 1:1000000.",
    "Phone extension 4567 and room 555 on floor 12; call 911.",
    "Look up ISBN 978-3-16-148410-0 and ISSN 2049-3630 in the catalogue.",
    "Version 2024.01.15 of the handbook, build 1.2.3.4567.",
    "Git tag v1.0.0 at 8c7e5a3 and docker image sha256:e3b0c44298fc1c149afbf4c8996fb924.",
    "Read the GB82 guidance and DE89 notes before filing; AB12 CDEF GHIJ KLMN is a code.",
    "See https://example.com/path?query=1&token=abc for the docs at example.com.",
    "Run `pip install trove==0.3.1` then `trove ingest --source demo`.",
    "The ratio 0612345678 is an internal id and 06-12 was the date.",
]


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in detect(text)]


@pytest.mark.parametrize(("pii_type", "value"), POSITIVES)
def test_detects_fake_values_with_exact_span(pii_type: str, value: str) -> None:
    text = f"Please note: {value} is on file.\n"
    assert _found(text) == [(pii_type, value)]


@pytest.mark.parametrize(("prefix", "value"), KEYED_SECRETS)
def test_detects_high_entropy_secrets_after_key_names(prefix: str, value: str) -> None:
    text = f"config {prefix}{value}\nnext line"
    assert _found(text) == [("api_key", value)]


@pytest.mark.parametrize("text", BENIGN)
def test_busy_benign_text_has_no_findings(text: str) -> None:
    assert _found(text) == []


def test_git_sha_is_a_secret_only_in_key_like_context() -> None:
    sha = "3f786850e387550fdd9a5e8a3b2c6e1f0d1a2b3c"
    assert detect(f"commit {sha}") == []
    assert _found(f"client_secret: {sha}") == [("api_key", sha)]


def test_invalid_ssn_ranges_and_bad_checksums_are_rejected() -> None:
    for ssn in ("000-45-6789", "666-45-6789", "900-45-6789", "123-00-6789", "123-45-0000"):
        assert detect(ssn) == [], ssn
    assert detect("GB83WEST12345698765432") == []  # check digits off by one
    assert detect("4111111111111112") == []  # Luhn fails
    assert detect(luhn_complete("9", 16)) == []  # Luhn ok but no issuer starts with 9


def test_validators() -> None:
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_iban_followed_by_text_is_cut_at_its_country_length() -> None:
    text = "Pay to DE89 3704 0044 0532 0130 00 FOR invoice 7."
    assert _found(text) == [("iban", "DE89 3704 0044 0532 0130 00")]


def test_overlaps_keep_the_longer_and_more_specific_span() -> None:
    # The IBAN's tail looks like a trunk-prefixed phone number on its own.
    iban = "NL91 ABNA 0417 1643 00"
    assert _found(f"IBAN {iban}") == [("iban", iban)]
    # Asking for phones alone must not report the IBAN's phone-shaped middle.
    assert detect(f"IBAN {iban}", ["phone"]) == []
    # A provider key in key-like context is one finding, not two.
    assert _found("api_key = AKIAIOSFODNN7EXAMPLE") == [("api_key", "AKIAIOSFODNN7EXAMPLE")]


def test_private_key_block_split_by_chunking_is_still_caught() -> None:
    head, tail = FAKE_PEM[:120], FAKE_PEM[120:]
    first, second = f"Intro text.\n{head}", f"{tail}\nClosing words here."
    [f1] = detect(first)
    assert f1.type == "private_key" and first[f1.start :].startswith("-----BEGIN")
    assert "MIIE" not in redact(first, [f1])
    [f2] = detect(second)
    assert f2.type == "private_key" and second[: f2.end].endswith("PRIVATE KEY-----")
    assert redact(second, [f2]) == "[REDACTED:private_key]\nClosing words here."


def test_types_filter_and_unknown_type() -> None:
    text = "mail a.b@example.com, ssn 123-45-6789"
    assert [f.type for f in detect(text, ["us_ssn"])] == ["us_ssn"]
    with pytest.raises(ConfigError, match="ssn_typo"):
        detect(text, ["ssn_typo"])


def test_redact_and_counts() -> None:
    text = "a.b@example.com and c.d@example.org, card 4111 1111 1111 1111."
    findings = detect(text)
    assert counts(findings) == {"email": 2, "payment_card": 1}
    assert redact(text, findings) == (
        "[REDACTED:email] and [REDACTED:email], card [REDACTED:payment_card]."
    )
    with pytest.raises(ValueError, match="overlapping"):
        redact(text, [Finding("email", 0, 10), Finding("email", 5, 12)])


def _chunks() -> list[Chunk]:
    texts = [
        "Contact jane@example.com or (555) 123-4567 for access.",
        "The rollout finished on 2024-01-15 at v2.14.3.",
        "api_key = AKIAIOSFODNN7EXAMPLE",
    ]
    return [
        Chunk(
            chunk_id=f"d#{i}",
            doc_id="d",
            ord=i,
            text=t,
            char_start=i * 100,
            char_end=i * 100 + len(t),
            context="Runbook by ops@example.com" if i == 1 else "Runbook",
        )
        for i, t in enumerate(texts)
    ]


def test_apply_policy_tag_keeps_chunks_and_counts_only() -> None:
    chunks = _chunks()
    result = apply_policy(chunks, "tag", PII_TYPES)
    assert result.chunks == tuple(chunks)
    assert result.dropped == 0
    assert result.findings_by_chunk == {
        "d#0": {"email": 1, "phone": 1},
        "d#1": {"email": 1},
        "d#2": {"api_key": 1},
    }
    assert result.counts == {"email": 2, "phone": 1, "api_key": 1}
    # Metadata carries counts, never values.
    assert "example.com" not in repr((result.findings_by_chunk, result.counts))


def test_apply_policy_redact_rewrites_text_and_context_keeping_spans() -> None:
    chunks = _chunks()
    result = apply_policy(chunks, "redact", ["email", "api_key"])
    out = {c.chunk_id: c for c in result.chunks}
    assert out["d#0"].text == "Contact [REDACTED:email] or (555) 123-4567 for access."
    assert out["d#1"].text == chunks[1].text
    assert out["d#1"].context == "Runbook by [REDACTED:email]"
    assert out["d#2"].text == "api_key = [REDACTED:api_key]"
    assert (out["d#0"].char_start, out["d#0"].char_end) == (
        chunks[0].char_start,
        chunks[0].char_end,
    )
    assert out["d#0"] is not chunks[0] and out["d#1"] is not chunks[1]
    assert result.counts == {"email": 2, "api_key": 1}
    assert assert_no_values([c.embedding_text for c in result.chunks], ["email", "api_key"]) == []


def test_apply_policy_drop_and_unknown_policy() -> None:
    chunks = _chunks()
    result = apply_policy(chunks, "drop", ["api_key"])
    assert [c.chunk_id for c in result.chunks] == ["d#0", "d#1"]
    assert result.dropped == 1
    with pytest.raises(ConfigError, match="'erase'"):
        apply_policy(chunks, "erase", PII_TYPES)


def test_assert_no_values_names_index_and_type_only() -> None:
    texts = ["clean text v1.2.3", "mail x.y@example.com and 123-45-6789", "[REDACTED:email]"]
    assert assert_no_values(texts) == [(1, "email"), (1, "us_ssn")]
    assert assert_no_values(texts, ["phone"]) == []


def test_precision_and_recall_on_the_labelled_set() -> None:
    """Every labelled value found with its exact span; no benign sentence flagged."""
    true_pos = sum(_found(f"x {v} y") == [(t, v)] for t, v in POSITIVES)
    true_pos += sum(_found(f"{p}{v}") == [("api_key", v)] for p, v in KEYED_SECRETS)
    false_pos = sum(len(detect(text)) for text in BENIGN)
    labelled = len(POSITIVES) + len(KEYED_SECRETS)
    assert (true_pos, false_pos) == (labelled, 0)


_VALUES = [v for _, v in POSITIVES] + [p + v for p, v in KEYED_SECRETS]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(BENIGN + _VALUES), min_size=1, max_size=8),
    st.lists(st.sampled_from([" ", "\n", ", ", ". ", "\n\n", " - "]), min_size=8, max_size=8),
)
def test_redaction_is_idempotent_on_random_compositions(parts: list[str], seps: list[str]) -> None:
    text = "".join(part + sep for part, sep in zip(parts, seps, strict=False))
    findings = detect(text)
    redacted = redact(text, findings)
    assert detect(redacted) == []
    for part in parts:
        if part in _VALUES:
            assert part not in redacted
    assert redacted.count("[REDACTED:") == len(findings)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(BENIGN + _VALUES),
            st.text(st.characters(codec="utf-8"), max_size=12),
            st.sampled_from(["\u0664\u0662", "١٢٣", "sk-", "AKIA", "eyJ", "@", "=", ":", "_"]),
        ),
        min_size=1,
        max_size=8,
    ).map(" ".join)
)
def test_gates_never_change_what_is_found(text: str) -> None:
    """Detectors skipped for lack of a digit, an "@" or a literal find nothing anyway."""
    from unittest import mock

    from pipelines import pii

    every = list(pii._DETECTORS.values())
    with mock.patch.object(pii, "_detectors_for", lambda _text: every):
        reference = detect(text)
    assert detect(text) == reference
    raw = [c for detector in every for c in detector(text)]
    gated = [c for detector in pii._detectors_for(text) for c in detector(text)]
    assert sorted(raw, key=repr) == sorted(gated, key=repr)
    # The API-key detector's own gates: a match implies the literal it checks for.
    if pii._PROVIDER_KEYS.search(text):
        assert any(literal in text for literal in pii._PROVIDER_LITERALS)
    if pii._OPENAI_KEY.search(text):
        assert "sk-" in text
    if pii._ASSIGNED_VALUE.search(text):
        assert "=" in text or ":" in text


def test_placeholders_are_inert() -> None:
    text = " ".join(placeholder(t) for t in PII_TYPES)
    assert detect(text) == []
    assert detect(f"api_key = {placeholder('api_key')}") == []


@pytest.mark.slow
def test_detection_throughput() -> None:
    """Report ms per 10k characters on mixed text; a loose bound catches regex blow-ups."""
    text = ("\n".join(BENIGN + _VALUES) + "\n") * 20
    start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        detect(text)
    ms_per_10k = (time.perf_counter() - start) * 1000 / rounds / (len(text) / 10_000)
    print(f"pii.detect: {ms_per_10k:.2f} ms per 10k characters over {len(text)} chars")
    assert ms_per_10k < 50
