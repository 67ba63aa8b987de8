"""Incremental token counting: a span's count summed from its parts equals a full re-encode.

The chunker counts a growing candidate span as the sum of its units' counts
when :meth:`HFTokenCounter.separates` says the gaps between them allow it. These
tests check the identity that rests on (on random text, against the real
MiniLM tokenizer), that anything outside it is refused, and that chunks come
out exactly as when every span is encoded whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import BPE, WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer, ByteLevel

from pipelines.chunk import chunk_document
from pipelines.models import ELEMENT_SEPARATOR, ParsedDocument, ParsedElement
from retrieval.embedding.base import resolve_model_path
from retrieval.embedding.tokens import HFTokenCounter, _additive_across_whitespace, load_tokenizer


@pytest.fixture(scope="module")
def minilm() -> HFTokenCounter:
    return HFTokenCounter(load_tokenizer(resolve_model_path("all-MiniLM-L6-v2")))


class WholeSpanCounter:
    """The same tokenizer without ``separates``: the chunker encodes every span whole."""

    def __init__(self, inner: HFTokenCounter) -> None:
        self.inner = inner

    def count(self, text: str) -> int:
        return self.inner.count(text)

    def split(self, text: str, max_tokens: int) -> list[tuple[int, int]]:
        return self.inner.split(text, max_tokens)


class RecordingCounter(HFTokenCounter):
    """Remembers every text it was asked to count."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__(tokenizer)
        self.counted: list[str] = []

    def count(self, text: str) -> int:
        self.counted.append(text)
        return super().count(text)


# Text that stresses BERT's normaliser and pre-tokeniser: accents and combining
# marks, CJK (split per character), punctuation, special-token look-alikes,
# control characters it deletes, exotic whitespace, words past WordPiece's
# 100-character limit, and anything else hypothesis draws.
_fragment = st.one_of(
    st.sampled_from(
        [
            " ",
            "\n",
            "\t",
            "\r",
            "\u00a0",
            "\u2028",
            "\x0b",
            "\x0c",
            "\x1c",
            "\x85",
            "\u200b",
            "\ufeff",
            "\x00",
            "\ufffd",
            "\u0301",
            "e\u0301",
            "Ça",
            "ΣΑΣ",
            "日本語",
            "한국어",
            "[SEP]",
            "[CLS]",
            "[MASK",
            "]",
            "##ing",
            "don't",
            "U.S.A.",
            "e-mail",
            "$1,000.00",
            "Unbelievable",
            "x" * 120,
            "word",
            ".",
        ]
    ),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
_text = st.lists(_fragment, max_size=30).map("".join)
_gap = st.text(alphabet=" \t\n\r", min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(a=_text, gap=_gap, b=_text)
def test_counts_add_up_across_a_separating_gap(minilm, a, gap, b):
    assert minilm.separates(gap)
    assert minilm.count(a + gap + b) == minilm.count(a) + minilm.count(b) - minilm.special_tokens


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(_text, min_size=1, max_size=8), gaps=st.lists(_gap, min_size=7, max_size=7))
def test_summed_counts_equal_a_full_encode_of_the_joined_text(minilm, parts, gaps):
    joined = parts[0] + "".join(g + p for g, p in zip(gaps, parts[1:], strict=False))
    summed = sum(minilm.count(p) for p in parts) - minilm.special_tokens * (len(parts) - 1)
    assert summed == minilm.count(joined)


@pytest.mark.parametrize(
    "gap",
    ["", "x", " x ", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u00a0", "\u2028", "\u200b", " \x0b"],
)
def test_gaps_outside_plain_whitespace_do_not_separate(minilm, gap):
    assert not minilm.separates(gap)


def test_a_deleted_control_character_glues_words_which_is_why_it_never_separates(minilm):
    # BERT's normaliser deletes \x0b and \x85 (control characters): "a\x0bb" is one word.
    for gap in ("\x0b", "\x85", "\x1c"):
        assert minilm.count(f"a{gap}b") != minilm.count("a") + minilm.count("b") - 2


def test_only_bert_style_tokenizers_are_counted_by_parts(minilm):
    config = json.loads(minilm._tok.to_str())
    assert _additive_across_whitespace(config)
    byte_level = Tokenizer(BPE())
    byte_level.pre_tokenizer = ByteLevel()
    assert not HFTokenCounter(byte_level).separates(" ")
    no_normaliser = Tokenizer(WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    no_normaliser.pre_tokenizer = BertPreTokenizer()
    assert not HFTokenCounter(no_normaliser).separates(" ")
    bert_like = Tokenizer(WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    bert_like.normalizer = BertNormalizer()
    bert_like.pre_tokenizer = BertPreTokenizer()
    assert HFTokenCounter(bert_like).separates(" ")
    spaced = {**config, "added_tokens": [*config["added_tokens"], {"content": "new line"}]}
    assert not _additive_across_whitespace(spaced)
    single_word = {**config, "added_tokens": [{"content": "[X]", "single_word": True}]}
    assert not _additive_across_whitespace(single_word)


# -- the chunker: the same chunks with and without counting by parts ---------------


def _document(
    elements: list[tuple[str, str, int | None]], title: str, gaps: list[str]
) -> ParsedDocument:
    """Elements joined by the given gaps (the parser always uses ELEMENT_SEPARATOR)."""
    placed, parts, pos = [], [], 0
    for i, (category, text, level) in enumerate(elements):
        if i:
            gap = gaps[i % len(gaps)]
            parts.append(gap)
            pos += len(gap)
        placed.append(ParsedElement(category, text, pos, pos + len(text), i // 3 + 1, level))
        parts.append(text)
        pos += len(text)
    return ParsedDocument("doc", "v1", title, "".join(parts), tuple(placed))


_words = st.lists(
    st.one_of(
        st.sampled_from(
            ["policy", "travel", "per", "diem", "Ça", "日本", "U.S.", "[SEP]", "x" * 110]
        ),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
    ),
    min_size=1,
    max_size=90,
)
_gluing = st.sampled_from(["\n\n", " ", "\n", "\t \n", "", "\x0b", " \x85 ", "|"])
_element = st.one_of(
    st.tuples(st.just("Title"), _words, st.one_of(st.none(), st.integers(1, 4))),
    st.tuples(st.sampled_from(["NarrativeText", "ListItem", "Table"]), _words, st.none()),
)


@settings(max_examples=150, deadline=None)
@given(
    elements=st.lists(_element, max_size=20),
    word_gaps=st.lists(st.sampled_from([" ", "  ", "\n", "-", ""]), min_size=1, max_size=4),
    element_gaps=st.lists(_gluing, min_size=1, max_size=4),
    title=st.text(max_size=30),
    max_tokens=st.integers(16, 200),
    extra=st.integers(0, 80),
    min_tokens=st.integers(0, 30),
)
def test_chunks_are_identical_to_encoding_every_span_whole(
    minilm, elements, word_gaps, element_gaps, title, max_tokens, extra, min_tokens
):
    specs = []
    for category, words, level in elements:
        text = "".join(w + word_gaps[i % len(word_gaps)] for i, w in enumerate(words)).strip()
        if text:
            specs.append((category, text, level))
    doc = _document(specs, title, element_gaps)
    kwargs = {
        "max_tokens": max_tokens,
        "max_seq_length": max_tokens + extra,
        "min_tokens": min_tokens,
    }
    try:
        expected = chunk_document(doc, WholeSpanCounter(minilm), **kwargs)
    except Exception as exc:  # the same failure, with the same message, either way
        with pytest.raises(type(exc), match=None) as info:
            chunk_document(doc, minilm, **kwargs)
        assert str(info.value) == str(exc)
        return
    assert chunk_document(doc, minilm, **kwargs) == expected


def test_a_growing_span_is_never_encoded_whole(minilm):
    """The point of it all: each element is encoded once, never a multi-element span."""
    paragraphs = [
        f"Paragraph {i} explains one rule of travel in a sentence or two." for i in range(60)
    ]
    specs = [("Title", "Travel", 1)] + [("NarrativeText", p, None) for p in paragraphs]
    doc = _document(specs, "Handbook", [ELEMENT_SEPARATOR])
    recording = RecordingCounter(minilm._tok)
    chunks = chunk_document(doc, recording)
    assert chunks == chunk_document(doc, WholeSpanCounter(minilm))
    assert len(chunks) > 3
    assert not [t for t in recording.counted if ELEMENT_SEPARATOR in t]
    assert len(recording.counted) <= len(specs) + 5  # elements, contexts, the empty string


@pytest.mark.corpus
def test_handbook_and_formats_corpus_chunk_identically(shared_corpora, minilm):
    from pipelines.errors import ParseError
    from pipelines.parse import parse_file

    root: Path = shared_corpora
    paths = sorted((root / "18f-handbook").rglob("*.md"))[:40]
    paths += sorted(p for p in (root / "formats").iterdir() if p.suffix in (".md", ".html", ".txt"))
    compared = 0
    for path in paths:
        try:
            doc = parse_file(path, doc_id=path.name, version="v1")
        except ParseError:
            continue
        for max_tokens, max_seq_length, min_tokens in ((200, 256, 24), (48, 64, 8)):
            kwargs = {"max_tokens": max_tokens, "max_seq_length": max_seq_length}
            kwargs["min_tokens"] = min_tokens
            whole = chunk_document(doc, WholeSpanCounter(minilm), **kwargs)
            assert chunk_document(doc, minilm, **kwargs) == whole, path
        compared += 1
    assert compared >= 40


def test_a_slow_tokenizer_is_refused_with_a_clear_error():
    from retrieval.embedding.tokens import TokenizerError, rust_tokenizer

    class SlowTokenizer:  # pure Python: no backend_tokenizer
        pass

    with pytest.raises(TokenizerError, match=r"fast \(Rust-backed\).*got SlowTokenizer"):
        HFTokenCounter(SlowTokenizer())
    wrapped = load_tokenizer(resolve_model_path("all-MiniLM-L6-v2"))
    assert rust_tokenizer(wrapped) is wrapped.backend_tokenizer
    assert rust_tokenizer(wrapped.backend_tokenizer) is wrapped.backend_tokenizer
