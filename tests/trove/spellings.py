"""Spellings of one identity: what the canonical form folds together, and what it refuses."""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

# Letters whose case and width variants all fold to one form (ß folds to "ss",
# É to é); no dotless ı or final ς, which Unicode case folding keeps apart.
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@+éßñöøÆ"
# Whitespace the form trims at either end: tab, newline, no-break, em and ideographic spaces.
PADDING = " \t\n\u00a0\u2003\u3000"
# Control and format characters (zero-width space/joiners, bidi override, soft
# hyphen, word joiner, BOM, NUL, DEL): refused wherever they stand.
REFUSED = "\u200b\u200c\u200d\u200e\u202e\u2060\u00ad\ufeff\x00\x01\x7f"
CASES = (str, str.upper, str.lower, str.swapcase, str.title)

names = st.text(NAME_CHARS, min_size=1, max_size=16)


def full_width(text: str) -> str:
    """ASCII letters, digits and signs as their full-width forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def spellings(draw: st.DrawFn, name: str) -> str:
    """``name`` in another case, width and normalisation form, maybe padded."""
    text = draw(st.sampled_from(CASES))(name)
    if draw(st.booleans()):
        text = full_width(text)
    text = unicodedata.normalize(draw(st.sampled_from(("NFC", "NFD"))), text)
    pad = st.text(PADDING, max_size=3)
    return draw(pad) + text + draw(pad)


@st.composite
def invalid_spellings(draw: st.DrawFn, name: str) -> str:
    """A spelling of ``name`` with a refused character slipped in anywhere."""
    text = draw(spellings(name))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(REFUSED)) + text[at:]
