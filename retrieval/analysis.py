"""The lexical analyzer: text -> index terms, identical for documents and queries.

Steps: Unicode NFKC normalisation and case folding (so "Ｆｉｌｅ", "FILE" and
"file" meet), split on anything that is not a letter or digit (digits are
kept: form numbers and years matter in enterprise text), drop English stop
words, then Snowball (Porter2) English stemming.

The analyzer's :attr:`Analyzer.name` is stored in every index segment: terms
written by one analyzer are only comparable with queries analysed by the same
one, so a change here must change the name (and the index must be rebuilt).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

import snowballstemmer

# Lucene's English stop set, plus the fragments left by splitting English
# contractions and possessives on the apostrophe ("don't" -> "don", "t").
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
        "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the",
        "their", "then", "there", "these", "they", "this", "to", "was", "will",
        "with", "s", "t",
    }
)  # fmt: skip

# Letters and digits; `_` is a word character for `\w` but a separator for us.
_TOKEN = re.compile(r"[^\W_]+")
# The same split without the regex for most of the text: every ASCII byte that is
# not a letter or digit becomes a space (UTF-8 bytes of other characters are all
# >= 0x80 and stay), then str.split() cuts at spaces (and Unicode white space,
# which is never a letter or digit). Only pieces that still hold a non-ASCII
# character go through _TOKEN, so the terms are exactly _TOKEN.findall's.
_ASCII_SEPARATORS = bytes(
    b if b >= 0x80 or chr(b).isalnum() else 0x20 for b in range(256)
)  # fmt: skip


def _words(folded: str) -> list[str]:
    """``_TOKEN.findall(folded)``, computed faster (see ``_ASCII_SEPARATORS``)."""
    try:
        spaced = folded.encode("utf-8").translate(_ASCII_SEPARATORS).decode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: let the regex split them
        return _TOKEN.findall(folded)
    pieces = spaced.split()
    if spaced.isascii():
        return pieces
    words: list[str] = []
    for piece in pieces:
        if piece.isascii():
            words.append(piece)
        else:
            words.extend(_TOKEN.findall(piece))
    return words


# snowballstemmer's stemmer objects keep state between calls: one per thread.
_local = threading.local()


def _stemmer() -> snowballstemmer.stemmer:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = snowballstemmer.stemmer("english")
        _local.stemmer = stemmer
    return stemmer


@lru_cache(maxsize=500_000)
def _stem(word: str) -> str:
    # A vocabulary is Zipfian: a bounded cache answers nearly every lookup.
    return _stemmer().stemWord(word)


class Analyzer:
    """Deterministic English analyzer.

    Example::

        >>> Analyzer().analyze("The Employees' travel-policies (2024)")
        ['employe', 'travel', 'polici', '2024']

    :param stem: apply Snowball English stemming.
    :param stop_words: terms dropped after case folding (before stemming).
    """

    def __init__(self, *, stem: bool = True, stop_words: frozenset[str] = ENGLISH_STOP_WORDS):
        self._stem = stem
        self._stop_words = frozenset(stop_words)
        stop_tag = "stop" if self._stop_words == ENGLISH_STOP_WORDS else "customstop"
        self.name = f"trove-en-v1:{'snowball' if stem else 'nostem'}:{stop_tag}"

    def analyze(self, text: str) -> list[str]:
        """The index terms of ``text``, in order, repeats kept (term frequency counts them)."""
        if not isinstance(text, str):
            raise TypeError(f"analyze takes a str, got {type(text).__name__}")
        stop = self._stop_words
        words = [w for w in self.words(text) if w not in stop]
        if self._stem:
            return [_stem(w) for w in words]
        return words

    def words(self, text: str) -> list[str]:
        """``text`` normalised, case-folded and split: the words before stop words and stemming."""
        return _words(unicodedata.normalize("NFKC", text).casefold())

    def term(self, word: str) -> str | None:
        """The index term of one of :meth:`words`' words; ``None`` for a stop word."""
        if word in self._stop_words:
            return None
        return _stem(word) if self._stem else word

    __call__ = analyze


DEFAULT_ANALYZER = Analyzer()


def analyze(text: str) -> list[str]:
    """:meth:`Analyzer.analyze` with the default analyzer."""
    return DEFAULT_ANALYZER.analyze(text)
