"""Chunking: spans, sections, budgets. Unit tests use a word counter; the real
MiniLM tokenizer proves the budgets on real text."""

from __future__ import annotations

import itertools
import re
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.chunk import ChunkingError, chunk_document
from pipelines.models import ELEMENT_SEPARATOR, Chunk, ParsedDocument, ParsedElement
from retrieval.embedding.base import resolve_model_path
from retrieval.embedding.tokens import HFTokenCounter, load_tokenizer

# -- helpers ---------------------------------------------------------------------


class WordCounter:
    """One token per whitespace-separated word; no special tokens."""

    def count(self, text: str) -> int:
        return len(text.split())

    def split(self, text: str, max_tokens: int) -> list[tuple[int, int]]:
        words = [m.span() for m in re.finditer(r"\S+", text)]
        return [
            (words[i][0], words[min(i + max_tokens, len(words)) - 1][1])
            for i in range(0, len(words), max_tokens)
        ]


Spec = tuple[str, str] | tuple[str, str, int | None] | tuple[str, str, int | None, int | None]


def make_doc(specs: list[Spec], title: str = "Handbook", doc_id: str = "doc") -> ParsedDocument:
    """(category, text[, heading_level[, page]]) -> a ParsedDocument with exact offsets."""
    elements, parts, pos = [], [], 0
    for spec in specs:
        category, text = spec[0], spec[1]
        level = spec[2] if len(spec) > 2 else None
        page = spec[3] if len(spec) > 3 else None
        if parts:
            pos += len(ELEMENT_SEPARATOR)
        elements.append(ParsedElement(category, text, pos, pos + len(text), page, level))
        parts.append(text)
        pos += len(text)
    return ParsedDocument(doc_id, "v1", title, ELEMENT_SEPARATOR.join(parts), tuple(elements))


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def assert_invariants(
    doc: ParsedDocument, chunks: list[Chunk], counter, max_tokens: int, max_seq_length: int
) -> None:
    assert [c.ord for c in chunks] == list(range(len(chunks)))
    previous_end = 0
    for c in chunks:
        assert c.chunk_id == f"{doc.doc_id}#{c.ord}"
        assert c.doc_id == doc.doc_id
        assert c.text == doc.text[c.char_start : c.char_end]
        assert c.text.strip() == c.text and c.text
        assert c.char_start >= previous_end
        previous_end = c.char_end
        assert c.token_count == counter.count(c.text) <= max_tokens
        assert counter.count(c.embedding_text) <= max_seq_length
        assert list(c.pages) == sorted(set(c.pages))
    # Every non-whitespace character of every element lands in exactly one chunk.
    covered = set()
    for c in chunks:
        covered.update(range(c.char_start, c.char_end))
    for e in doc.elements:
        for i in range(e.char_start, e.char_end):
            if not doc.text[i].isspace():
                assert i in covered, f"character {i} ({doc.text[i]!r}) not in any chunk"


# -- structure -------------------------------------------------------------------


def test_sections_follow_heading_levels_and_spans_are_exact():
    doc = make_doc(
        [
            ("Title", "Travel policy", 1),
            ("NarrativeText", words(30, "intro")),
            ("Title", "Per diem", 2),
            ("NarrativeText", words(30, "pd")),
            ("Title", "Meals", 3),
            ("NarrativeText", words(30, "meal")),
            ("Title", "Lodging", 3),
            ("NarrativeText", words(30, "lodge")),
            ("Title", "Leave", 1),
            ("NarrativeText", words(30, "leave")),
        ],
        title="Travel policy",
    )
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=200, max_seq_length=256, min_tokens=0)
    assert_invariants(doc, chunks, counter, 200, 256)
    # A level-1 heading closes the chunk; deeper headings join it within budget.
    assert [c.section for c in chunks] == [("Travel policy",), ("Leave",)]
    assert chunks[0].text.startswith("Travel policy") and chunks[0].text.endswith("lodge29")
    assert chunks[1].text.startswith("Leave")
    # The title is not repeated when it equals the first section.
    assert chunks[0].context == "Travel policy"
    assert chunks[1].context == "Travel policy > Leave"


def test_same_level_heading_starts_a_new_chunk_and_deeper_sections_are_recorded():
    doc = make_doc(
        [
            ("Title", "Per diem", 2),
            ("NarrativeText", words(40, "pd")),
            ("Title", "Meals", 3),
            ("NarrativeText", words(40, "meal")),
            ("Title", "Lodging", 3),
            ("NarrativeText", words(40, "lodge")),
        ]
    )
    counter = WordCounter()
    # 50 words: "Per diem" + pd text fits, adding "Meals" + its text does not.
    chunks = chunk_document(doc, counter, max_tokens=50, max_seq_length=64, min_tokens=0)
    assert_invariants(doc, chunks, counter, 50, 64)
    assert [c.section for c in chunks] == [
        ("Per diem",),
        ("Per diem", "Meals"),
        ("Per diem", "Lodging"),
    ]
    assert [c.text.split()[0] for c in chunks] == ["Per", "Meals", "Lodging"]
    assert chunks[2].context == "Handbook > Per diem > Lodging"


def test_heading_is_kept_with_its_content_when_the_chunk_fills_up():
    doc = make_doc(
        [
            ("NarrativeText", words(20, "a")),
            ("Title", "Deeper", None),
            ("NarrativeText", words(20, "b")),
        ]
    )
    counter = WordCounter()
    # Preamble (20) + heading (1) fits in 25, the next paragraph does not.
    chunks = chunk_document(doc, counter, max_tokens=25, max_seq_length=40, min_tokens=0)
    assert_invariants(doc, chunks, counter, 25, 40)
    assert [c.text.split()[0] for c in chunks] == ["a0", "Deeper"]
    assert chunks[0].section == ("Handbook",)  # before any heading: the title
    assert chunks[1].section == ("Deeper",)


def test_leading_headings_join_the_first_content_and_give_its_path():
    doc = make_doc(
        [
            ("Title", "Travel", 1),
            ("Title", "Per diem", 2),
            ("NarrativeText", words(10, "x")),
        ],
        title="",
    )
    chunks = chunk_document(doc, WordCounter(), min_tokens=0)
    assert len(chunks) == 1
    assert chunks[0].text == doc.text
    assert chunks[0].section == ("Travel", "Per diem")
    assert chunks[0].context == "Travel > Per diem"


def test_unknown_heading_levels_are_siblings_one_below_the_deepest_known_heading():
    doc = make_doc(
        [
            ("Title", "Guide", 1),
            ("Title", "Bold line A", None),
            ("NarrativeText", words(30, "a")),
            ("Title", "Bold line B", None),
            ("NarrativeText", words(30, "b")),
            ("Title", "Chapter 2", 1),
            ("NarrativeText", words(30, "c")),
        ]
    )
    chunks = chunk_document(doc, WordCounter(), max_tokens=40, max_seq_length=60, min_tokens=0)
    assert [c.section for c in chunks] == [
        ("Guide", "Bold line A"),
        ("Guide", "Bold line B"),
        ("Chapter 2",),
    ]


def test_documents_without_levels_get_flat_sections():
    doc = make_doc(
        [
            ("Title", "One", None),
            ("NarrativeText", words(5)),
            ("Title", "Two", None),
            ("NarrativeText", words(5)),
        ]
    )
    chunks = chunk_document(doc, WordCounter(), min_tokens=0)
    assert [c.section for c in chunks] == [("One",), ("Two",)]


def test_long_element_is_split_into_exact_fitting_pieces_with_its_page():
    doc = make_doc(
        [
            ("Title", "Section", 1, 3),
            ("NarrativeText", words(95, "long"), None, 4),
            ("NarrativeText", words(5, "tail"), None, 5),
        ]
    )
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=30, max_seq_length=40, min_tokens=0)
    assert_invariants(doc, chunks, counter, 30, 40)
    assert len(chunks) >= 4
    # The heading travels with the first piece; the last piece absorbs the small tail.
    assert chunks[0].text.startswith("Section\n\nlong0")
    assert chunks[0].pages == (3, 4)
    assert all(c.section == ("Section",) for c in chunks)
    assert chunks[-1].text.endswith("tail4") and chunks[-1].pages == (4, 5)
    rebuilt = " ".join(c.text for c in chunks).split()
    assert rebuilt == doc.text.split()


def test_small_trailing_element_joins_the_previous_chunk():
    doc = make_doc(
        [
            ("Title", "S", 1),
            ("NarrativeText", words(14, "a")),
            ("Table", words(20, "t")),
            ("NarrativeText", words(3, "z")),
        ]
    )
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=23, max_seq_length=40, min_tokens=5)
    assert [c.text.split()[0] for c in chunks] == ["S", "t0"]
    assert chunks[-1].text.endswith("z2")
    assert [c.token_count for c in chunks] == [15, 23]


def test_tiny_chunk_does_not_merge_across_sections():
    doc = make_doc(
        [
            ("Title", "A", 1),
            ("NarrativeText", words(10)),
            ("Title", "B", 1),
            ("NarrativeText", "short"),
        ]
    )
    chunks = chunk_document(doc, WordCounter(), min_tokens=24)
    assert [c.section for c in chunks] == [("A",), ("B",)]


def test_long_section_path_is_capped_keeping_title_and_innermost_section():
    sections = [words(12, f"s{i}_") for i in range(6)]
    specs: list[Spec] = [("Title", s, i + 1) for i, s in enumerate(sections)]
    specs.append(("NarrativeText", words(50, "body")))
    doc = make_doc(specs, title="Doc title")
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=200, max_seq_length=256)
    assert len(chunks) == 1
    context = chunks[0].context
    assert counter.count(context) <= 48
    assert context.startswith("Doc title > … > ")
    assert context.endswith(sections[-1])
    assert sections[0] not in context


def test_context_is_cut_when_title_and_innermost_section_alone_exceed_cap():
    doc = make_doc([("Title", words(60, "h"), 1), ("NarrativeText", words(10))], title=words(60))
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=200, max_seq_length=256)
    assert counter.count(chunks[0].context) == 48
    assert_invariants(doc, chunks, counter, 200, 256)


def test_budget_counts_the_context_prefix():
    # 40 words of text fit max_tokens=50, but not next to a 20-word context in 55.
    doc = make_doc(
        [("Title", words(19, "h"), 1), ("NarrativeText", words(40))], title="Title words"
    )
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=50, max_seq_length=55, min_tokens=0)
    assert_invariants(doc, chunks, counter, 50, 55)
    assert len(chunks) == 2


def test_pages_are_sorted_and_distinct():
    doc = make_doc(
        [
            ("NarrativeText", "one two", None, 2),
            ("NarrativeText", "three", None, 1),
            ("NarrativeText", "four", None, 2),
            ("NarrativeText", "five", None, None),
        ]
    )
    [chunk] = chunk_document(doc, WordCounter(), min_tokens=0)
    assert chunk.pages == (1, 2)


def test_empty_and_whitespace_documents_give_no_chunks():
    assert chunk_document(make_doc([]), WordCounter()) == []
    assert chunk_document(make_doc([("NarrativeText", "  \n ")]), WordCounter()) == []


def test_element_span_that_does_not_match_text_is_an_error():
    doc = make_doc([("NarrativeText", "hello world")])
    bad = ParsedDocument(
        "doc", "v1", "t", doc.text, (ParsedElement("NarrativeText", "hello", 1, 6),)
    )
    with pytest.raises(ChunkingError, match=r"\[1, 6\)"):
        chunk_document(bad, WordCounter())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_seq_length": 0}, "max_seq_length"),
        ({"min_tokens": -1}, "min_tokens"),
    ],
)
def test_impossible_budgets_are_rejected(kwargs, message):
    with pytest.raises(ChunkingError, match=message):
        chunk_document(make_doc([("NarrativeText", "x")]), WordCounter(), **kwargs)


def test_chunking_is_deterministic():
    doc = make_doc([("Title", "T", 1), ("NarrativeText", words(500)), ("ListItem", words(7))])
    assert chunk_document(doc, WordCounter()) == chunk_document(doc, WordCounter())


# -- property: random element sequences ------------------------------------------

_word = st.text(alphabet="abcxyz.", min_size=1, max_size=6)
_element = st.one_of(
    st.tuples(
        st.just("Title"),
        st.lists(_word, min_size=1, max_size=4),
        st.one_of(st.none(), st.integers(1, 4)),
        st.one_of(st.none(), st.integers(1, 9)),
    ),
    st.tuples(
        st.sampled_from(["NarrativeText", "ListItem", "Table"]),
        st.lists(_word, min_size=1, max_size=120),
        st.none(),
        st.one_of(st.none(), st.integers(1, 9)),
    ),
)


@settings(max_examples=120, deadline=None)
@given(
    elements=st.lists(_element, max_size=25),
    title=st.lists(_word, max_size=8),
    max_tokens=st.integers(16, 80),
    extra=st.integers(0, 40),
    min_tokens=st.integers(0, 20),
)
def test_random_documents_keep_every_invariant(elements, title, max_tokens, extra, min_tokens):
    specs: list[Spec] = [(cat, " ".join(ws), level, page) for cat, ws, level, page in elements]
    doc = make_doc(specs, title=" ".join(title))
    counter = WordCounter()
    max_seq_length = max_tokens + extra
    chunks = chunk_document(
        doc, counter, max_tokens=max_tokens, max_seq_length=max_seq_length, min_tokens=min_tokens
    )
    assert_invariants(doc, chunks, counter, max_tokens, max_seq_length)
    assert chunks == chunk_document(
        doc, counter, max_tokens=max_tokens, max_seq_length=max_seq_length, min_tokens=min_tokens
    )
    # A heading directly followed by content is never the last element of a chunk,
    # unless a run of headings leaves too little room and becomes a chunk of its own.
    non_empty = [e for e in doc.elements if e.text.strip()]
    for chunk in chunks[:-1]:
        ends = [i for i, e in enumerate(non_empty) if e.char_end == chunk.char_end]
        if not ends or ends[0] + 1 == len(non_empty):
            continue  # the chunk ends inside an element, or at the last one
        last, following = non_empty[ends[0]], non_empty[ends[0] + 1]
        if last.category == "Title" and following.category != "Title":
            inside = [e for e in non_empty if chunk.char_start <= e.char_start < chunk.char_end]
            assert all(e.category == "Title" for e in inside), chunk
    # No chunk under min_tokens is left that would fit into the previous one of its section.
    for prev, chunk in itertools.pairwise(chunks):
        if chunk.token_count < min_tokens and chunk.section == prev.section:
            joined = doc.text[prev.char_start : chunk.char_end]
            assert (
                counter.count(joined) > max_tokens
                or counter.count(f"{prev.context}\n\n{joined}") > max_seq_length
            )


# -- the real tokenizer ------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_counter() -> HFTokenCounter:
    return HFTokenCounter(load_tokenizer(resolve_model_path("all-MiniLM-L6-v2")))


def test_hf_counter_counts_special_tokens_and_is_not_truncated(minilm_counter):
    assert minilm_counter.count("") == 2  # [CLS] [SEP]
    assert minilm_counter.count("hello world") == 4
    # tokenizer.json ships truncation at 128; the counter must see past it.
    assert minilm_counter.count("word " * 1000) == 1002


def test_hf_counter_split_prefers_sentence_ends_and_covers_the_text(minilm_counter):
    sentence = "The traveller files the voucher within five business days of returning. "
    text = sentence * 20
    spans = minilm_counter.split(text, 64)
    assert len(spans) > 1
    for start, end in spans:
        piece = text[start:end]
        assert minilm_counter.count(piece) <= 64
        assert piece.endswith("returning.")
        assert piece == piece.strip()
    assert "".join(text[s:e] for s, e in spans).replace(" ", "") == text.replace(" ", "")


def test_hf_counter_split_cuts_a_giant_word(minilm_counter):
    text = "x" * 5000
    spans = minilm_counter.split(text, 32)
    assert all(minilm_counter.count(text[s:e]) <= 32 for s, e in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


@settings(max_examples=80, deadline=None)
@given(
    text=st.lists(
        st.one_of(
            st.sampled_from([" ", "\n", "\t", ".", "!", "-", "word", "Unbelievable"]),
            st.text(st.characters(codec="utf-8"), max_size=8),
        ),
        max_size=150,
    ).map("".join),
    max_tokens=st.integers(3, 40),
)
def test_hf_counter_split_holds_its_contract_on_any_text(minilm_counter, text, max_tokens):
    spans = minilm_counter.split(text, max_tokens)
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert e1 <= s2
    covered = set()
    for start, end in spans:
        piece = text[start:end]
        assert piece and piece == piece.strip()
        assert minilm_counter.count(piece) <= max_tokens
        covered.update(range(start, end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


_ANY_TEXT = st.lists(
    st.one_of(
        st.sampled_from(
            [" ", "\n", "\t", "\r", "\x0b", "\x85", "\xa0", "\u3000", ".", "-", "word", "Über"]
        ),
        st.sampled_from(["中文字", "naïve", "x" * 120, "\x00", "\u200b", "e\u0301"]),
        st.text(st.characters(codec="utf-8"), max_size=8),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(_ANY_TEXT, max_size=6))
def test_hf_counter_word_counts_equal_encoding_the_whole_text(minilm_counter, texts):
    """count/count_many sum cached word counts: exactly what encoding each text gives."""
    whole = [len(minilm_counter._tok.encode(text).ids) for text in texts]
    assert minilm_counter.count_many(texts) == whole
    assert [minilm_counter.count(text) for text in texts] == whole


def test_hf_counter_stays_exact_when_its_word_cache_is_emptied(minilm_counter, monkeypatch):
    from retrieval.embedding import tokens

    monkeypatch.setattr(tokens, "WORD_CACHE_SIZE", 4)
    counter = HFTokenCounter(minilm_counter._tok)  # its own, empty cache
    texts = [f"alpha beta gamma{i} delta\tepsilon\nzeta {i}" for i in range(30)]
    whole = [len(minilm_counter._tok.encode(text).ids) for text in texts]
    for text, expected in zip(texts, whole, strict=True):
        assert counter.count(text) == expected
        # Cleared whenever it would pass its size: never more than one call's words.
        assert len(counter._word_counts) <= max(4, len(set(text.split())))
    assert counter.count_many(texts) == whole


def _markdown_document(path: Path, doc_id: str) -> ParsedDocument:
    """Markdown read as plain blocks: '#' lines become leveled titles."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"\A---\n.*?\n---\n", "", raw, flags=re.S)
    title = re.search(r"^# (.+)$", raw, flags=re.M)
    specs: list[Spec] = []
    for block in re.split(r"\n\s*\n", raw):
        block = block.strip()
        if not block:
            continue
        heading = re.match(r"^(#{1,6}) (.+)$", block)
        if heading and "\n" not in block:
            specs.append(("Title", heading.group(2), len(heading.group(1))))
        else:
            specs.append(("NarrativeText", block))
    return make_doc(specs, title=title.group(1) if title else path.stem, doc_id=doc_id)


HAND_BUILT = [
    ("Title", "Travel policy", 1, 1),
    ("NarrativeText", "This policy covers official travel by employees. " * 3, None, 1),
    ("Title", "Per diem", 2, 1),
    (
        "NarrativeText",
        "Per diem covers lodging, meals and incidental expenses. Rates vary by city "
        "and are published by GSA each fiscal year. " * 25,
        None,
        2,
    ),
    ("Title", "Meals", 3, 3),
    ("ListItem", "Breakfast is reimbursed at 25% of the daily M&IE rate.", None, 3),
    ("ListItem", "On the first and last day of travel, you get 75% of the rate.", None, 3),
    ("Title", "Lodging", 3, 3),
    ("Table", "City | Rate\nBoston | $258\nDenver | $199\n" * 30, None, 4),
]


def test_real_tokenizer_keeps_budgets_on_a_hand_built_document(minilm_counter):
    doc = make_doc(HAND_BUILT, title="Travel policy")
    chunks = chunk_document(doc, minilm_counter)
    assert_invariants(doc, chunks, minilm_counter, 200, 256)
    assert len(chunks) >= 4
    assert chunks[0].section == ("Travel policy",)
    assert any(c.section == ("Travel policy", "Per diem", "Lodging") for c in chunks)
    assert {p for c in chunks for p in c.pages} == {1, 2, 3, 4}


@pytest.mark.corpus
def test_real_tokenizer_on_handbook_pages(shared_corpora, minilm_counter):
    root = shared_corpora / "18f-handbook"
    paths = [
        root / "travel-and-leave" / "leave.md",
        root / "launching-software" / "infrastructure.md",
        root / "tools" / "github.md",
    ]
    sizes: list[int] = []
    for path in paths:
        doc = _markdown_document(path, doc_id=path.stem)
        chunks = chunk_document(doc, minilm_counter)
        assert_invariants(doc, chunks, minilm_counter, 200, 256)
        assert all(c.context.startswith(doc.title) for c in chunks)
        sizes += [c.token_count for c in chunks]
    # Packing works: most chunks are well filled, few are scraps.
    assert statistics.median(sizes) > 80
    assert sum(s < 24 for s in sizes) < len(sizes) * 0.2


def test_passages_outside_any_heading_take_the_document_title_as_section():
    doc = make_doc([("Table", words(10, "t")), ("NarrativeText", words(10, "p"))], title="Cups")
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=12, max_seq_length=30, min_tokens=0)
    assert len(chunks) == 2
    assert all(c.section == ("Cups",) for c in chunks)
    assert chunks[0].context == "Cups"  # the context line does not repeat it
    untitled = make_doc([("NarrativeText", words(5, "p"))], title="")
    assert chunk_document(untitled, counter, max_tokens=12, max_seq_length=30)[0].section == ()


def test_tiny_section_merges_into_a_preamble_cited_under_the_same_title():
    # Found by hypothesis: the preamble is cited under the title, and so is a first
    # heading equal to the title; a tiny chunk there must merge like any other.
    doc = make_doc([("NarrativeText", "a"), ("Title", "a", 1), ("NarrativeText", "a")], title="a")
    chunks = chunk_document(doc, WordCounter(), max_tokens=16, max_seq_length=20, min_tokens=8)
    assert len(chunks) == 1
    assert chunks[0].section == ("a",)
    assert chunks[0].text == doc.text
