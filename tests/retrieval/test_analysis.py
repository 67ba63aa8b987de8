"""The lexical analyzer."""

from __future__ import annotations

import threading

from retrieval.analysis import Analyzer, analyze


def test_folds_case_and_width_splits_and_keeps_digits():
    assert analyze("ＦＩＬＥ Form-1099 x_y") == ["file", "form", "1099", "x", "y"]


def test_drops_stop_words_and_stems():
    assert analyze("The employees' travelling policies") == ["employe", "travel", "polici"]
    assert analyze("the of and to") == []


def test_documents_and_queries_meet():
    assert set(analyze("Policies on travel")) <= set(analyze("travel POLICY"))


def test_unstemmed_variant_has_its_own_name():
    plain = Analyzer(stem=False)
    assert plain.analyze("running dogs") == ["running", "dogs"]
    assert plain.name != Analyzer().name


def test_thread_safe_stemming():
    words = [f"running{i} jumped walking{i}" for i in range(2000)]
    expected = [analyze(w) for w in words]
    results: list[list[list[str]]] = [[], []]

    def work(slot: int) -> None:
        results[slot] = [Analyzer().analyze(w) for w in words]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == expected


def test_fast_split_equals_the_token_regex_for_every_character():
    """retrieval.analysis._words (byte translation + split) against _TOKEN.findall."""
    import random

    from retrieval.analysis import _TOKEN, _words

    for cp in range(0x110000):
        c = chr(cp)
        for text in (c, f"ab{c}cd", f"{c}x{c}9"):
            assert _words(text) == _TOKEN.findall(text), hex(cp)
    rng = random.Random(21)
    pool = [chr(i) for i in range(0x3000)] + list("abc def_ghi'-\u2019\u2014é ") * 40
    for _ in range(5000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
        assert _words(text) == _TOKEN.findall(text), repr(text)
