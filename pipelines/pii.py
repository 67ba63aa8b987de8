"""PII and secret detection at ingestion: find, count, redact or drop.

Detection is regex candidates plus validation in code (Luhn for cards, mod-97
for IBANs, SSN range rules, Shannon entropy for secrets in key-like context).
Candidate regexes are written to be unambiguous (a separator sits between digit
runs, never an optional one between two ``\\d+``), so no input can make them
backtrack badly; the strictness lives in the validators.

Precision over recall: enterprise text is full of numbers (prices, dates,
versions, order ids, IP addresses, hashes), so phone numbers need separators or
a ``+`` prefix, cards need a valid Luhn sum and a known issuer prefix, and
high-entropy strings are secrets only after a key-like name (``api_key = ...``).

A :class:`Finding` is a typed character span; detected values are never stored,
logged or returned as metadata: counts leave this module, values never do.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from core.errors import ConfigError
from pipelines.config import PII_TYPES
from pipelines.models import Chunk

PiiPolicy = Literal["tag", "redact", "drop"]
POLICIES: tuple[str, ...] = ("tag", "redact", "drop")


@dataclass(frozen=True)
class Finding:
    """A detected value's type and ``[start, end)`` span in the scanned text (never the value)."""

    type: str
    start: int
    end: int


def placeholder(pii_type: str) -> str:
    """The typed text that replaces a redacted value; no detector matches it."""
    return f"[REDACTED:{pii_type}]"


# When spans overlap the longer one wins; on equal length the more specific type
# (stronger validation) wins. Provider-format keys outrank entropy guesses.
_SPECIFICITY = {
    "private_key": 9,
    "iban": 7,
    "payment_card": 6,
    "api_key": 5,  # provider formats; the entropy rule uses rank 1
    "email": 4,
    "us_ssn": 3,
    "phone": 2,
}
_ENTROPY_RANK = 1


@dataclass(frozen=True)
class _Candidate:
    type: str
    start: int
    end: int
    rank: int


# --------------------------------------------------------------------------- email

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-]|\.[A-Za-z0-9])"
)
# `logo@2x.png` is an asset name, not an address.
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "pdf", "bmp", "ico", "tiff"})


def _emails(text: str) -> Iterator[_Candidate]:
    for m in _EMAIL.finditer(text):
        if m.group().rsplit(".", 1)[-1].lower() in _FILE_TLDS:
            continue
        yield _Candidate("email", m.start(), m.end(), _SPECIFICITY["email"])


# --------------------------------------------------------------------------- phone

# International: "+" then digit runs separated by one space, dash or dot, with an
# optional "(0)" / "(20)" trunk group. E.164 is the single-run case.
_PHONE_INTL = re.compile(
    r"(?<![\w+])\+[1-9]\d*(?:[ .\-]?\(\d{1,4}\)[ .\-]?\d+|[ .\-]\d+)*(?![\w+])"
)
# North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567.
# Bare spaces ("555 123 4567") are too often table columns, so they need the
# parenthesised area code or a leading +1 (handled by the international rule).
_PHONE_US = re.compile(
    r"(?<![\w(])(?<!\d[.\-])(?:1[.\-])?(?:\((?P<pa>[2-9]\d{2})\)[ ]?(?P<ex1>\d{3})[ .\-]"
    r"|(?P<a>[2-9]\d{2})(?P<s1>[.\-])(?P<ex2>\d{3})(?P=s1))\d{4}(?![\w]|[.\-]\d)"
)
# National trunk-prefixed (most of Europe, UK): 06 1234 5678, 020 7946 0958,
# 030 12345678, 01 23 45 67 89. Dots are excluded: "01.02.2024" is a date.
_PHONE_NATIONAL = re.compile(r"(?<![\w.\-/+])0[1-9]\d{0,4}(?:[ \-]\d{2,8}){1,4}(?![\w]|[.\-/]\d)")


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _intl_ok(s: str) -> bool:
    groups = re.findall(r"\d+", s)
    # "+3.14159265" is arithmetic: dotted forms need at least three groups.
    return 8 <= sum(map(len, groups)) <= 15 and ("." not in s or len(groups) >= 3)


def _national_ok(s: str) -> bool:
    return 9 <= _digit_count(s) <= 12


def _valid_cuts(
    pattern: re.Pattern[str], text: str, ok: Callable[[str], bool]
) -> Iterator[tuple[int, int]]:
    """Spans of ``pattern`` matches cut back at spaces to lengths ``ok`` accepts.

    Two numbers in a row ("020 7946 0958 020 7946 0958") match as one run that no
    rule accepts; trimming at spaces and searching on finds both.
    Every accepted cut is a candidate: when the longest one eats the start of a
    card ("+14155552671 4111 1111 1111 1111"), overlap resolution picks the card
    and a shorter cut still covers the phone.
    """
    pos = 0
    while m := pattern.search(text, pos):
        s = m.group()
        cuts = [len(s)] + [i for i in range(len(s) - 1, 0, -1) if s[i] == " "]
        for cut in cuts:
            if ok(s[:cut]):
                yield m.start(), m.start() + cut
        # On from the next character, not the cut: a rejected run can hide the
        # start of a valid number ("0532 0130 00 06 1234 5678").
        pos = m.start() + 1


def _phones(text: str) -> Iterator[_Candidate]:
    rank = _SPECIFICITY["phone"]
    for start, end in _valid_cuts(_PHONE_INTL, text, _intl_ok):
        yield _Candidate("phone", start, end, rank)
    for m in _PHONE_US.finditer(text):
        yield _Candidate("phone", m.start(), m.end(), rank)
    for start, end in _valid_cuts(_PHONE_NATIONAL, text, _national_ok):
        yield _Candidate("phone", start, end, rank)


# --------------------------------------------------------------------------- SSN

_SSN = re.compile(r"(?<![\w\-])(\d{3})-(\d{2})-(\d{4})(?![\w]|-\d)")


def _ssns(text: str) -> Iterator[_Candidate]:
    for m in _SSN.finditer(text):
        area, group, serial = m.groups()
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        yield _Candidate("us_ssn", m.start(), m.end(), _SPECIFICITY["us_ssn"])


# --------------------------------------------------------------------------- cards

# A run of digit groups; card-shaped stretches of it are cut out in code, so two
# cards in a row are two findings, not one rejected 32-digit run.
_DIGIT_RUN = re.compile(r"(?<![\w\-.])\d+(?:[ \-]\d+)*")

# (prefix range low, high, allowed lengths) over the number's leading digits.
_IIN_RANGES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (300, 305, (14, 16, 17, 18, 19)),  # Diners Club
    (36, 36, (14, 16, 17, 18, 19)),
    (38, 39, (14, 16, 17, 18, 19)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (50, 50, (13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 58, (13, 14, 15, 16, 17, 18, 19)),
    (67, 67, (13, 14, 15, 16, 17, 18, 19)),
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _plausible_iin(digits: str) -> bool:
    for low, high, lengths in _IIN_RANGES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


def _card_grouping_ok(s: str) -> bool:
    seps = {c for c in s if not c.isdigit()}
    if not seps:
        return True
    if len(seps) > 1:
        return False
    lengths = [len(g) for g in s.split(seps.pop())]
    if lengths in ([4, 6, 5], [4, 6, 4]):  # Amex, Diners
        return True
    return all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _cards(text: str) -> Iterator[_Candidate]:
    rank = _SPECIFICITY["payment_card"]
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() < 13:
            continue
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", run.group())]
        base, i = run.start(), 0
        while i < len(groups):
            for j in range(min(i + 5, len(groups)) - 1, i - 1, -1):
                start, end = base + groups[i][0], base + groups[j][1]
                if _card_at(text, start, end):
                    yield _Candidate("payment_card", start, end, rank)
                    i = j
                    break
            i += 1


def _card_at(text: str, start: int, end: int) -> bool:
    after = text[end : end + 2]
    # A word character or a decimal part right after means a longer token.
    if after[:1].isalnum() or after[:1] == "_" or (after[:1] == "." and after[1:2].isdigit()):
        return False
    s = text[start:end]
    digits = "".join(c for c in s if c.isdigit())
    return (
        13 <= len(digits) <= 19
        and _card_grouping_ok(s)
        and _plausible_iin(digits)
        and luhn_valid(digits)
    )


# --------------------------------------------------------------------------- IBAN

# Lengths from the SWIFT IBAN registry.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# Compact or grouped by spaces; the exact length is cut in code, per country.
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check on an IBAN without spaces."""
    if not 15 <= len(compact) <= 34 or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _ibans(text: str) -> Iterator[_Candidate]:
    rank = _SPECIFICITY["iban"]
    pos = 0
    # Search on from each cut, not from the match end: "DE89 ... 00 NO93 ..." is
    # one regex match holding two IBANs.
    while m := _IBAN.search(text, pos):
        length = _iban_length_at(text, m)
        if length is None:
            pos = m.start() + 1
            continue
        yield _Candidate("iban", m.start(), m.start() + length, rank)
        pos = m.start() + length


def _iban_length_at(text: str, m: re.Match[str]) -> int | None:
    """Characters (spaces included) of the valid IBAN starting the match, if any."""
    s = m.group()
    expected = IBAN_LENGTHS.get(s[:2])
    if expected is None:
        # Unknown country: the whole token must validate, nothing trimmed.
        if text[m.end() : m.end() + 1].isalnum() or not iban_valid(s.replace(" ", "")):
            return None
        return len(s)
    ends = [i + 1 for i, c in enumerate(s) if c != " "]  # just after each alnum character
    if len(ends) < expected:
        return None
    end = ends[expected - 1]
    # The IBAN must not run on into more letters/digits without a break.
    if s[end : end + 1].isalnum() or (end == len(s) and text[m.end() : m.end() + 1].isalnum()):
        return None
    return end if iban_valid(s[:end].replace(" ", "")) else None


# --------------------------------------------------------------------------- API keys

_PROVIDER_KEYS = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9])"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|[sr]k_live_[A-Za-z0-9]{16,}"  # Stripe
    r"|AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"  # Google API key
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
    r")"
)
# OpenAI-style keys: checked for digits and entropy so "sk-some-long-slug" passes by.
_OPENAI_KEY = re.compile(r"(?<![\w\-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")

_KEY_NAME = (
    r"(?:api[_\- ]?key|apikey|access[_\- ]?key(?:[_\- ]?id)?"
    r"|secret(?:[_\- ]?(?:access[_\- ]?)?key)?|client[_\- ]?secret"
    r"|(?:auth|access|refresh|api|session|bearer|id)?[_\- ]?token"
    r"|password|passwd|pwd|pass[_\- ]?phrase|credentials?|private[_\- ]?key)"
)
_SECRET_VALUE = r"[A-Za-z0-9+/=_\-.~]{20,}"
# Anchored on the assignment, then the name before it is checked: scanning for
# the separator is several times faster than trying every key name at every
# position.
_ASSIGNED_VALUE = re.compile(rf"(?:=>|:=|[:=])[ \t]*[\"'`]?(?P<value>{_SECRET_VALUE})")
_KEY_NAME_BEFORE = re.compile(rf"(?i){_KEY_NAME}[\"']?[ \t]*$")
_KEY_NAME_WINDOW = 48
_BEARER = re.compile(rf"(?i)\bbearer[ \t]+(?P<value>{_SECRET_VALUE})")
# `settings.embedding.max_tokens` and snake_case names are code, not secrets.
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\.?")
ENTROPY_THRESHOLD = 3.5  # bits/char; random hex of 40 chars sits near 3.8, base64 near 5


def shannon_entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _looks_secret(value: str) -> bool:
    if len(value) < 20 or shannon_entropy(value) < ENTROPY_THRESHOLD:
        return False
    if _DOTTED_NAME.fullmatch(value) or value.startswith(("/", "./", "../", "~/")):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_lower = any(c.islower() for c in value)
    has_upper = any(c.isupper() for c in value)
    return (has_digit and (has_lower or has_upper)) or (
        has_lower and has_upper and len(value) >= 32
    )


# Literals every _PROVIDER_KEYS match contains (GitHub's and Stripe's forms all hold "_").
_PROVIDER_LITERALS = (
    "_",
    "AKIA",
    "ASIA",
    "AGPA",
    "AIDA",
    "AROA",
    "ANPA",
    "AIPA",
    "xox",
    "AIza",
    "eyJ",
)


def _api_keys(text: str) -> Iterator[_Candidate]:
    # Each search runs only when the text holds a literal its every match needs.
    if any(literal in text for literal in _PROVIDER_LITERALS):
        for m in _PROVIDER_KEYS.finditer(text):
            yield _Candidate("api_key", m.start(), m.end(), _SPECIFICITY["api_key"])
    if "sk-" in text:
        for m in _OPENAI_KEY.finditer(text):
            tail = m.group()[3:]
            if any(c.isdigit() for c in tail) and shannon_entropy(tail) >= ENTROPY_THRESHOLD:
                yield _Candidate("api_key", m.start(), m.end(), _SPECIFICITY["api_key"])
    keyed = (
        [
            m
            for m in _ASSIGNED_VALUE.finditer(text)
            if _KEY_NAME_BEFORE.search(text, max(0, m.start() - _KEY_NAME_WINDOW), m.start())
        ]
        if "=" in text or ":" in text
        else []
    )
    if "bearer" in text.lower():
        keyed.extend(_BEARER.finditer(text))
    for m in keyed:
        value = m.group("value").rstrip(".")  # a sentence's full stop is not part of the key
        if _looks_secret(value):
            start = m.start("value")
            yield _Candidate("api_key", start, start + len(value), _ENTROPY_RANK)


# --------------------------------------------------------------------------- private keys

_PEM_TYPE = r"(?:RSA |EC |OPENSSH |DSA |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?"
_PEM_BLOCK = re.compile(rf"-----BEGIN {_PEM_TYPE}-----.*?-----END {_PEM_TYPE}-----", re.DOTALL)
_PEM_BEGIN = re.compile(rf"-----BEGIN {_PEM_TYPE}-----")
_PEM_END = re.compile(rf"-----END {_PEM_TYPE}-----")
# A block cut in two by chunking: the base64 body (and headers) on the open side.
_PEM_BODY_AFTER = re.compile(
    r"(?:\s+(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9+/]+={1,2}|[A-Za-z\-]+:[^\n]*))*"
)
_PEM_BODY_BEFORE = re.compile(r"(?<!\S)(?:(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9+/]+={1,2})\s+)+$")


def _private_keys(text: str) -> Iterator[_Candidate]:
    if "PRIVATE KEY" not in text:
        return
    rank = _SPECIFICITY["private_key"]
    covered: list[tuple[int, int]] = []
    for m in _PEM_BLOCK.finditer(text):
        covered.append((m.start(), m.end()))
        yield _Candidate("private_key", m.start(), m.end(), rank)

    def inside(pos: int) -> bool:
        return any(a <= pos < b for a, b in covered)

    # Half blocks: a BEGIN with no END (or the reverse) means the chunker split
    # the key; redact the header plus the base64 body on its side.
    for m in _PEM_BEGIN.finditer(text):
        if not inside(m.start()):
            body = _PEM_BODY_AFTER.match(text, m.end())
            end = body.end() if body else m.end()
            covered.append((m.start(), end))
            yield _Candidate("private_key", m.start(), end, rank)
    for m in _PEM_END.finditer(text):
        if not inside(m.start()):
            body = _PEM_BODY_BEFORE.search(text, 0, m.start())
            start = body.start() if body else m.start()
            yield _Candidate("private_key", start, m.end(), rank)


# --------------------------------------------------------------------------- API

_DETECTORS: dict[str, Callable[[str], Iterator[_Candidate]]] = {
    "email": _emails,
    "phone": _phones,
    "us_ssn": _ssns,
    "payment_card": _cards,
    "iban": _ibans,
    "api_key": _api_keys,
    "private_key": _private_keys,
}
assert set(_DETECTORS) == set(PII_TYPES), "every PII type needs a detector"


# Every match of these detectors holds a digit (\d, as their patterns say), and every
# e-mail an "@": a text without one cannot produce a candidate, so it is not searched.
_NEED_A_DIGIT = frozenset({"phone", "us_ssn", "payment_card", "iban"})
_ANY_DIGIT = re.compile(r"\d")


def _detectors_for(text: str) -> list[Callable[[str], Iterator[_Candidate]]]:
    has_digit = _ANY_DIGIT.search(text) is not None
    return [
        detector
        for name, detector in _DETECTORS.items()
        if (has_digit or name not in _NEED_A_DIGIT) and (name != "email" or "@" in text)
    ]


def _check_types(types: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(types)
    unknown = sorted(wanted - set(PII_TYPES))
    if unknown:
        raise ConfigError(f"unknown PII types {unknown} (valid: {', '.join(PII_TYPES)})")
    return wanted


def detect(text: str, types: Iterable[str] = PII_TYPES) -> list[Finding]:
    """Non-overlapping findings of ``types`` in ``text``, sorted by position.

    All detectors run and overlaps are settled before filtering by ``types``, so
    asking for phones alone never reports the phone-shaped middle of an IBAN.

    :raises ConfigError: a type not in ``PII_TYPES``.
    """
    wanted = _check_types(types)
    candidates = [c for detector in _detectors_for(text) for c in detector(text)]
    candidates.sort(key=lambda c: (-(c.end - c.start), -c.rank, c.start))
    # Kept spans never overlap, so sorted starts and ends stay in step: a new span
    # is free iff the kept span before it ends in time and the one after starts late.
    starts: list[int] = []
    ends: list[int] = []
    kept: list[_Candidate] = []
    for cand in candidates:
        i = bisect.bisect_right(starts, cand.start)
        if (i and ends[i - 1] > cand.start) or (i < len(starts) and starts[i] < cand.end):
            continue
        starts.insert(i, cand.start)
        ends.insert(i, cand.end)
        kept.insert(i, cand)
    return [Finding(c.type, c.start, c.end) for c in kept if c.type in wanted]


def redact(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with each finding's span replaced by its typed :func:`placeholder`."""
    parts: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < pos:
            raise ValueError(f"overlapping findings at {f.start} (previous ended at {pos})")
        parts.append(text[pos : f.start])
        parts.append(placeholder(f.type))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    return dict(Counter(f.type for f in findings))


@dataclass(frozen=True)
class PiiResult:
    """What :func:`apply_policy` kept, and counts (never values) of what it found.

    ``findings_by_chunk`` lists only chunks with findings, counting text and
    context together; ``counts`` sums over all input chunks, kept or dropped.
    """

    chunks: tuple[Chunk, ...]
    findings_by_chunk: dict[str, dict[str, int]]
    counts: dict[str, int]
    dropped: int


def apply_policy(
    chunks: Sequence[Chunk], policy: str, types: Iterable[str] = PII_TYPES
) -> PiiResult:
    """Scan chunks' text and context for ``types`` and apply ``policy``.

    - ``tag``: chunks unchanged; the result carries the counts.
    - ``redact``: new chunks (``dataclasses.replace``) whose ``text`` and
      ``context`` have typed placeholders. ``char_start``/``char_end`` still
      point into the original parsed text, so a redacted chunk's citation span
      covers the original, unredacted passage, and ``text`` no longer equals
      ``parsed.text[char_start:char_end]`` for it.
    - ``drop``: only chunks with no finding in text or context.

    :raises ConfigError: an unknown policy or type.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown PII policy {policy!r} (valid: {', '.join(POLICIES)})")
    wanted = _check_types(types)
    kept: list[Chunk] = []
    by_chunk: dict[str, dict[str, int]] = {}
    total: Counter[str] = Counter()
    for chunk in chunks:
        in_text = detect(chunk.text, wanted)
        in_context = detect(chunk.context, wanted) if chunk.context else []
        if not in_text and not in_context:
            kept.append(chunk)
            continue
        found = Counter(f.type for f in (*in_text, *in_context))
        by_chunk[chunk.chunk_id] = dict(found)
        total.update(found)
        if policy == "tag":
            kept.append(chunk)
        elif policy == "redact":
            kept.append(
                replace(
                    chunk,
                    text=redact(chunk.text, in_text),
                    context=redact(chunk.context, in_context),
                )
            )
    return PiiResult(
        chunks=tuple(kept),
        findings_by_chunk=by_chunk,
        counts=dict(total),
        dropped=len(chunks) - len(kept),
    )


def assert_no_values(
    texts: Iterable[str], types: Iterable[str] = PII_TYPES
) -> list[tuple[int, str]]:
    """``(index, type)`` for each text still holding a value of ``types``; empty when clean.

    Meant for asset checks after redaction: it names where a leak is, never what.
    """
    wanted = _check_types(types)
    violations: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        violations.extend((i, t) for t in sorted({f.type for f in detect(text, wanted)}))
    return violations
