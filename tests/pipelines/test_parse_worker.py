"""The parse worker: real unstructured in a subprocess, timeouts, crashes and recovery."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.models import SourceDocument
from pipelines.config import LimitsConfig
from pipelines.errors import ParseError
from pipelines.parse import parse_file
from pipelines.parse_worker import GuardedParser, ParseWorker, make_parse_fn
from tests.pipelines import hostile_files as hostile
from tests.pipelines.worker_probe import document as _doc

LIMITS = LimitsConfig()
HOOKS = "tests.pipelines.hostile_files"


@pytest.fixture(scope="module")
def guarded() -> Iterator[GuardedParser]:
    """One real worker for the module: unstructured is imported once."""
    with make_parse_fn(LIMITS) as parse:
        yield parse


def _reason_class(parse: Callable[[SourceDocument], object], path: Path) -> str:
    with pytest.raises(ParseError) as info:
        parse(_doc(path))
    return info.value.reason_class


@pytest.mark.parametrize(
    "make",
    [hostile.make_docx, hostile.make_pdf, hostile.make_utf16_text, hostile.make_cp1252_text],
    ids=["docx", "pdf", "utf16", "cp1252"],
)
def test_good_files_parse_in_the_worker_as_in_process(
    guarded: GuardedParser, tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    path = make(tmp_path)
    expected = parse_file(path, doc_id=f"test:{path.name}", version="v1")
    parsed = guarded(_doc(path))
    assert parsed == expected
    assert parsed.text.strip()


def test_decoded_text_survives_the_worker(guarded: GuardedParser, tmp_path: Path) -> None:
    assert "Grüße aus Köln." in guarded(_doc(hostile.make_utf16_text(tmp_path))).text
    assert "café crème – “quoted”" in guarded(_doc(hostile.make_cp1252_text(tmp_path))).text


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (hostile.make_zip_bomb_docx, "zip_bomb"),
        (hostile.make_encrypted_pdf, "encrypted"),
        (hostile.make_encrypted_docx, "encrypted"),
        (hostile.make_truncated_pdf, "malformed"),
        (lambda d: hostile.make_noise(d, "noise.pdf"), "type_mismatch"),
        (hostile.make_nested_html, "empty"),
        (hostile.make_empty, "empty"),
        (hostile.make_whitespace, "empty"),
        (hostile.make_single_line_text, "limit_exceeded"),
    ],
    ids=[
        "zip-bomb",
        "encrypted-pdf",
        "encrypted-docx",
        "truncated-pdf",
        "noise-pdf",
        "nested-html",
        "empty",
        "whitespace",
        "50mb-one-line",
    ],
)
def test_hostile_files_fail_with_their_reason_class(
    guarded: GuardedParser, tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path)
    started = time.perf_counter()
    assert _reason_class(guarded, path) == expected
    assert time.perf_counter() - started < 20.0


def test_owner_only_encrypted_pdf_is_readable(guarded: GuardedParser, tmp_path: Path) -> None:
    path = hostile.make_encrypted_pdf(tmp_path, user_password="")
    assert "Confidential numbers." in guarded(_doc(path)).text


def test_post_parse_limits_apply_in_the_worker(guarded: GuardedParser, tmp_path: Path) -> None:
    path = hostile.make_docx(tmp_path)  # a title and a paragraph: two elements
    with pytest.raises(ParseError, match=r"limits\.max_elements") as info:
        guarded.worker.parse(_doc(path), LimitsConfig(max_elements=1))
    assert info.value.reason_class == "limit_exceeded"


def test_timeout_kills_the_process_and_the_next_document_parses(tmp_path: Path) -> None:
    slow = hostile.make_text(tmp_path, "slow.txt", "never parsed")
    good = hostile.make_text(tmp_path, "after.txt", "Parsed after the timeout.")
    with ParseWorker(f"{HOOKS}:slow_parse") as worker:
        worker.start()
        first_pid = worker.pid
        assert first_pid is not None
        started = time.perf_counter()
        with pytest.raises(ParseError, match=r"limits\.timeout_s") as info:
            worker.parse(_doc(slow), LimitsConfig(timeout_s=1.0))
        assert info.value.reason_class == "timeout"
        assert time.perf_counter() - started < 5.0
        assert worker.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # killed and reaped
        assert "Parsed after the timeout." in worker.parse(_doc(good), LIMITS).text
        assert worker.starts == 2


def test_a_dying_parser_is_a_crash_and_the_worker_recovers(tmp_path: Path) -> None:
    crash = hostile.make_text(tmp_path, "crash.txt", "boom")
    good = hostile.make_text(tmp_path, "fine.txt", "Still parsing after a crash.")
    with ParseWorker(f"{HOOKS}:crashing_parse") as worker:
        with pytest.raises(ParseError, match="exit code 1") as info:
            worker.parse(_doc(crash), LIMITS)
        assert info.value.reason_class == "parser_crash"
        assert "Still parsing after a crash." in worker.parse(_doc(good), LIMITS).text
        assert worker.starts == 2


def test_a_parser_bug_is_a_crash_without_a_restart(tmp_path: Path) -> None:
    path = hostile.make_text(tmp_path, "any.txt", "text")
    with ParseWorker(f"{HOOKS}:raising_parse") as worker:
        for _ in range(2):
            with pytest.raises(ParseError, match=r"RuntimeError: parser bug on any\.txt") as info:
                worker.parse(_doc(path), LIMITS)
            assert info.value.reason_class == "parser_crash"
        assert worker.starts == 1


def test_close_stops_the_process(tmp_path: Path) -> None:
    worker = ParseWorker(f"{HOOKS}:raising_parse")
    worker.start()
    pid = worker.pid
    assert pid is not None
    worker.close()
    assert worker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
