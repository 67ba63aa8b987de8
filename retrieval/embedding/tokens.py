"""Token counting for chunking, measured with the embedding model's own tokenizer.

The chunker only needs two operations (:class:`TokenCounter`): how many tokens
a text costs the model, and where to cut a long text into pieces that each fit.
:class:`HFTokenCounter` answers both from a Hugging Face fast tokenizer, so a
chunk that passes the chunker's budget is never silently truncated by the model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from tokenizers import Tokenizer

from core.errors import TroveError


class TokenizerError(TroveError, ValueError):
    """A tokenizer cannot be used for counting, or a split budget is impossible."""


@runtime_checkable
class TokenCounter(Protocol):
    """What the chunker needs from a tokenizer.

    ``count`` includes whatever the model adds around every input (for BERT,
    ``[CLS]`` and ``[SEP]``), so ``count(text) <= n`` means ``text`` fits an
    ``n``-token window as is.

    ``split(text, max_tokens)`` returns ``(start, end)`` character spans of
    consecutive, non-overlapping pieces of ``text``, in order, each with
    ``count(text[start:end]) <= max_tokens``. Pieces carry no leading or
    trailing whitespace, and together they cover every non-whitespace character
    of ``text``; cuts fall at sentence ends where possible, else between words,
    and only inside a word that alone exceeds the budget. Whitespace-only text
    gives ``[]``.

    A counter may also offer ``separates(gap) -> bool`` (:meth:`HFTokenCounter.separates`):
    True promises ``count(a + gap + b) == count(a) + count(b) - count("")`` for any
    ``a`` and ``b``, and the chunker then counts a span from its elements' counts.

    It may offer ``count_many(texts) -> list[int]`` too, equal to ``count`` of
    each text: the chunker then counts a document's elements in one call.
    """

    def count(self, text: str) -> int: ...

    def split(self, text: str, max_tokens: int) -> list[tuple[int, int]]: ...


# Gaps across which counts add up (see HFTokenCounter.separates): whitespace that every
# stage of a BERT tokenizer treats as whitespace. Not \x0b, \x0c, \x1c-\x1f or \x85,
# which BERT's normaliser deletes as control characters (gluing the words around them).
_SEPARATING_WHITESPACE = " \t\n\r"

_WORD_GAPS = re.compile(f"[{_SEPARATING_WHITESPACE}]+")
# Distinct words whose counts a counter remembers (~100 bytes each).
WORD_CACHE_SIZE = 500_000

_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*$")


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class HFTokenCounter:
    """A :class:`TokenCounter` over a Hugging Face tokenizer's token offsets.

    Accepts a ``transformers`` fast tokenizer (``Embedder.tokenizer``) or a raw
    ``tokenizers.Tokenizer``. It works on a private copy of the Rust tokenizer
    with truncation and padding switched off: the copy a model uses carries its
    own truncation (``tokenizer.json`` of MiniLM ships ``max_length=128``, and
    sentence-transformers sets 256 while encoding), which would cap every count
    at that length and hide exactly the overflows the chunker must see.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = rust_tokenizer(tokenizer)
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self.special_tokens = len(self._tok.encode("").ids)
        self._additive = _additive_across_whitespace(json.loads(backend.to_str()))
        self._word_counts: dict[str, int] = {}  # word -> count(word), see count_many

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``count`` of each text, in one call.

        With a tokenizer whose counts add up across whitespace (:meth:`separates`),
        a text costs the sum of its words' counts less the special tokens between
        them, and each distinct word is encoded once per process (a dictionary
        lookup per word costs a tiny fraction of BERT's Rust pipeline on the text:
        docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way). Otherwise
        every text is encoded whole.
        """
        if not texts:
            return []
        if not self._additive:
            return [len(encoding.ids) for encoding in self._encode_batch(list(texts))]
        split = [[w for w in _WORD_GAPS.split(text) if w] for text in texts]
        cache = self._word_counts
        known: dict[str, int] = {}
        missing: list[str] = []
        for words in split:
            for word in words:
                if word not in known:
                    n = cache.get(word)
                    if n is None:
                        missing.append(word)
                        n = -1
                    known[word] = n
        if missing:
            fresh = [len(e.ids) for e in self._encode_batch(missing)]
            known.update(zip(missing, fresh, strict=True))
            if len(cache) + len(missing) > WORD_CACHE_SIZE:
                cache.clear()  # a bound on memory; the corpus's common words come back
            cache.update(zip(missing, fresh, strict=True))
        overhead = self.special_tokens
        # count(a + gap + b) == count(a) + count(b) - overhead, word after word.
        return [
            sum(known[w] for w in words) - overhead * (len(words) - 1) if words else overhead
            for words in split
        ]

    def _encode_batch(self, texts: list[str]) -> list[Any]:
        # Without offsets where the library can skip them (tokenizers >= 0.21).
        encode = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch
        return encode(texts)

    def separates(self, gap: str) -> bool:
        """Whether counts add up across ``gap``: for every ``a`` and ``b``,
        ``count(a + gap + b) == count(a) + count(b) - special_tokens``.

        Lets the chunker count a growing span from its parts' counts instead of
        re-encoding it for every candidate. True only for a non-empty gap of
        spaces, tabs, newlines and carriage returns, and only for a tokenizer whose
        every stage keeps words apart across such a gap (see
        :func:`_additive_across_whitespace`); otherwise False, and the caller
        encodes the whole span.
        """
        return self._additive and bool(gap) and not gap.strip(_SEPARATING_WHITESPACE)

    def split(self, text: str, max_tokens: int) -> list[tuple[int, int]]:
        budget = max_tokens - self.special_tokens
        if budget < 1:
            raise TokenizerError(
                f"max_tokens={max_tokens} leaves no room for content next to "
                f"{self.special_tokens} special tokens"
            )
        pieces: list[tuple[int, int]] = []
        base = 0
        while True:
            rest = text[base:]
            offsets = [
                span
                for span in self._tok.encode(rest, add_special_tokens=False).offsets
                if span[1] > span[0]
            ]
            start, end = _strip_span(rest, 0, len(rest))
            if not offsets or self.count(rest[start:end]) <= max_tokens:
                if end > start:
                    pieces.append((base + start, base + end))
                return pieces
            found, resume = self._split_offsets(rest, offsets, budget, max_tokens)
            pieces += [(base + s, base + e) for s, e in found]
            if resume is None:
                return pieces
            base += resume

    def _split_offsets(
        self, text: str, offsets: list[tuple[int, int]], budget: int, max_tokens: int
    ) -> tuple[list[tuple[int, int]], int | None]:
        """Pieces of ``text`` cut at token boundaries, and where to re-tokenise and
        resume (``None`` when done) after a piece had to be cut inside a token."""
        n = len(offsets)
        # Balanced target: 210 tokens at a budget of 200 become ~105 + ~105, not
        # 200 + 10, so no piece is a scrap too small to mean anything.
        target = math.ceil(n / math.ceil(n / budget))
        pieces: list[tuple[int, int]] = []
        first = 0  # index of the first token of the current piece
        piece_start = 0  # character where the current piece begins
        while first < n:
            if n - first <= budget:
                cut, cut_char = n, len(text)
            else:
                cut = self._choose_cut(text, offsets, first, target, budget)
                cut_char = offsets[cut][0]
            span = _strip_span(text, piece_start, cut_char)
            # A cut inside a word re-tokenises differently on its own ("vable"
            # is not "##vable"); shrink until the piece really fits.
            while self.count(text[span[0] : span[1]]) > max_tokens and cut - first > 1:
                cut -= 1
                cut_char = offsets[cut][0]
                span = _strip_span(text, piece_start, cut_char)
            if self.count(text[span[0] : span[1]]) > max_tokens:
                # Even one token's worth re-tokenises too long: cut by characters.
                end = self._longest_fitting_prefix(text, span[0], span[1], max_tokens)
                pieces.append((span[0], end))
                return pieces, end
            if span[1] > span[0]:
                pieces.append(span)
            first = cut
            piece_start = cut_char
        return pieces, None

    def _longest_fitting_prefix(self, text: str, start: int, end: int, max_tokens: int) -> int:
        lo, hi = start + 1, end  # text[start:lo] (one character) is tried last
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count(text[start:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        if self.count(text[start:lo]) > max_tokens:
            raise TokenizerError(
                f"cannot cut {text[start:end]!r} to {max_tokens} tokens: "
                f"{text[start:lo]!r} alone is longer"
            )
        return lo

    @staticmethod
    def _choose_cut(
        text: str, offsets: list[tuple[int, int]], first: int, target: int, budget: int
    ) -> int:
        """Index of the first token of the next piece: a sentence end near the
        target, else a word boundary near it, else the budget's hard limit."""
        ideal = first + target
        lo = first + max(1, target // 2)
        hi = first + budget  # the piece holds tokens first..hi-1 at most

        def gap_before(k: int) -> bool:  # whitespace between token k-1 and token k
            return offsets[k - 1][1] < offsets[k][0]

        def sentence_before(k: int) -> bool:
            return gap_before(k) and bool(_SENTENCE_END.search(text[: offsets[k - 1][1]][-4:]))

        for test in (sentence_before, gap_before):
            best = None
            for k in range(lo, hi + 1):
                if test(k) and (best is None or abs(k - ideal) < abs(best - ideal)):
                    best = k
            if best is not None:
                return best
        return hi


def _additive_across_whitespace(config: dict[str, Any]) -> bool:
    """Whether a tokenizer (its ``tokenizer.json``) counts ``a + " " + b`` as ``a`` plus ``b``.

    Holds for BERT's pipeline (MiniLM's): the normaliser works character by
    character and maps whitespace to a space (only its control-character removal
    and accent stripping go beyond that, and a space stops both); the
    pre-tokeniser splits words at every space; WordPiece encodes each word alone;
    the post-processor adds the same special tokens around any single input; and
    added tokens (``[SEP]``...), matched before the rest, hold no whitespace, so no
    match spans a gap. Byte-level BPE (a space is part of the next token) or
    SentencePiece do not qualify and are counted whole.
    """
    normalizer = config.get("normalizer") or {}
    pre_tokenizer = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    post = config.get("post_processor")
    if normalizer.get("type") != "BertNormalizer":
        return False
    if pre_tokenizer.get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece":
        return False
    if post is not None:
        if post.get("type") == "TemplateProcessing":
            pieces = post.get("single") or []
            if sum("Sequence" in piece for piece in pieces) != 1:
                return False
        elif post.get("type") != "BertProcessing":
            return False
    for token in config.get("added_tokens") or []:
        content = str(token.get("content", ""))
        if not content or token.get("single_word") or any(ch.isspace() for ch in content):
            return False
    return True


def rust_tokenizer(tokenizer: Any) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer``: itself, or a transformers
    fast tokenizer's backend (the ONNX embedders hand out the former, torch's the latter).

    :raises TokenizerError: a slow (pure Python) tokenizer, which has none.
    """
    backend = tokenizer if isinstance(tokenizer, Tokenizer) else None
    if backend is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise TokenizerError(
            f"a fast (Rust-backed) tokenizer is needed, got {type(tokenizer).__name__}"
        )
    return backend


def load_tokenizer(path: str) -> Any:
    """Load only the tokenizer of a local model folder (fast; no weights)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot load a tokenizer from {path!r}: {exc}") from exc


__all__ = [
    "HFTokenCounter",
    "TokenCounter",
    "TokenizerError",
    "load_tokenizer",
    "rust_tokenizer",
]
