"""`trove status` and `trove ingest` reports as records, and their two renderings.

The records are built by hand (no index, no store): the JSON rendering has the
keys `trove status --json` and `trove ingest --json` print, and the text
rendering says what the CLI prints for the same report today.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import trove.ingest
import trove.status
from pipelines.index_check import FIX, IndexCheck
from pipelines.records import ChangeClass, FailedDocument, FailureReason, QuarantinedDocument
from pipelines.run_records import RepairSummary, RunSummary
from retrieval.index.base import IndexGeneration
from trove.cli import app
from trove.ingest import IngestReport, ingest_lines
from trove.status import (
    STATE_FIX,
    Freshness,
    IndexAgreement,
    OcrStatus,
    PendingChanges,
    SourceReport,
    SourceStatus,
    StatusReport,
    hints_of,
    problems_of,
    status_lines,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _rendered(lines: list[str]) -> list[str]:
    """Rich markup lines as a terminal shows them."""
    console = Console(width=400, file=io.StringIO())
    for line in lines:
        console.print(line, highlight=False)
    return console.file.getvalue().splitlines()


def _quarantined(path: str, reason_class: FailureReason) -> QuarantinedDocument:
    seen = NOW - timedelta(days=1)
    return QuarantinedDocument(
        f"docs:{path}", path, "v1", "parse", f"{path} is {reason_class}", reason_class, seen, NOW
    )


def _status(**changes: object) -> SourceStatus:
    base = SourceStatus(
        last_sync=NOW - timedelta(minutes=90),
        documents=12,
        chunks=40,
        pending=PendingChanges({ChangeClass.ADDED: 2, ChangeClass.DELETED: 1}),
        failures=(_quarantined("scan.pdf", FailureReason.NEEDS_OCR),),
        freshness=Freshness(3600.0, 5400.0, "stale"),
        schedule="0 * * * *",
        type="filesystem",
        groups=None,
        last_sync_error=None,
        ocr=OcrStatus("off", ("eng",), None),
    )
    return SourceStatus(**{**base.__dict__, **changes})


def _agreement(ok: bool) -> IndexAgreement:
    generation = IndexGeneration("ix", 4, "c4")
    check = IndexCheck(
        source="docs",
        recorded=generation,
        current=generation if ok else None,
        index_found=ok,
        compared=True,
        manifest_documents=12,
        manifest_chunks=40,
        index_documents=12 if ok else 0,
        index_chunks=40 if ok else 0,
        missing=() if ok else ("docs:a.md",),
    )
    return IndexAgreement.of(check)


@pytest.fixture
def report() -> StatusReport:
    sources = {
        "docs": SourceReport(_status(), _agreement(ok=True)),
        "wiki": SourceReport(
            _status(
                pending=PendingChanges(not_computed="remote source: `trove ingest` syncs it"),
                failures=(),
                last_sync=None,
                freshness=Freshness(None, None, "no_sla"),
                type="confluence",
                groups={"groups": 3, "users": 5, "memberships": 9},
            ),
            _agreement(ok=False),
        ),
        "broken": SourceReport(
            None, IndexAgreement(False, "the staging store is unreadable", STATE_FIX)
        ),
    }
    index = {"backend": "embedded", "ready": True, "chunks": 40, "documents": 12, "error": None}
    return StatusReport(sources, index, problems_of(sources), hints_of(sources))


def test_the_status_report_renders_the_json_keys_of_trove_status(report):
    data = report.to_dict()
    assert list(data) == ["sources", "index", "problems", "hints", "ok"]
    assert data["ok"] is False
    docs = data["sources"]["docs"]
    assert list(docs) == [
        "last_sync",
        "documents",
        "chunks",
        "pending",
        "failures",
        "freshness",
        "schedule",
        "type",
        "groups",
        "last_sync_error",
        "ocr",
        "index",
    ]
    assert docs["last_sync"] == (NOW - timedelta(minutes=90)).isoformat()
    assert docs["pending"] == {"added": 2, "changed": 0, "deleted": 1, "acl_only": 0}
    assert docs["failures"][0]["reason_class"] == "needs_ocr"
    assert set(docs["failures"][0]) == {
        "path",
        "reason",
        "reason_class",
        "version",
        "first_seen",
        "last_seen",
    }
    assert docs["ocr"]["available"] is True and docs["ocr"]["how_to_enable"] is None
    assert docs["index"]["ok"] is True and docs["index"]["fix"] is None
    assert data["sources"]["wiki"]["pending"] == {
        "not_computed": "remote source: `trove ingest` syncs it"
    }
    assert data["sources"]["wiki"]["groups"]["memberships"] == 9
    assert data["sources"]["broken"] == {
        "index": {"ok": False, "error": "the staging store is unreadable", "fix": STATE_FIX}
    }
    assert [(p["source"], p["fix"]) for p in data["problems"]] == [
        ("wiki", FIX),
        ("broken", STATE_FIX),
    ]
    assert [h["source"] for h in data["hints"]] == ["docs"]
    assert "set `ocr: auto`" in data["hints"][0]["hint"]


def test_a_source_waiting_for_ocr_on_a_machine_without_it_gets_the_install_hint():
    sources = {
        "docs": SourceReport(
            _status(ocr=OcrStatus("auto", ("eng",), "tesseract is not installed")),
            _agreement(ok=True),
        )
    }
    [hint] = hints_of(sources)
    assert hint.hint.startswith("1 document(s) need OCR to be read: tesseract is not installed:")
    assert not hints_of({"docs": SourceReport(_status(failures=()), _agreement(ok=True))})


def _config(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    path = tmp_path / "trove.yaml"
    config = {
        "index": {"path": str(tmp_path / "index")},
        "state": {"path": str(tmp_path / "state")},
        "sources": [{"name": "docs", "path": str(tmp_path / "docs")}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_status_lines_say_what_the_cli_prints(report, tmp_path, monkeypatch):
    monkeypatch.setattr(trove.status, "status_report", lambda settings, now=None: report)
    printed = CliRunner().invoke(app, ["status", "--config", str(_config(tmp_path))])
    assert printed.exit_code == 1  # the report has problems
    lines = status_lines(report)
    assert any(line.startswith("[bold]docs[/]: last sync") for line in lines)
    assert not any("broken" in line and "last sync" in line for line in lines)
    # The CLI renders the markup; the text is the same, whatever the terminal's width.
    cli_lines = _flat(printed.stdout)
    rendered = _rendered(lines)
    # Two sources (one failure), the index, a hint, two errors; the unreadable source has none.
    assert len(rendered) == 7 and sum(line.startswith("ERROR") for line in rendered) == 2
    for line in rendered:
        assert _flat(line) in cli_lines, line
    # The remote source's pending note is printed as it is, without its JSON key after it.
    assert "pending: remote source: `trove ingest` syncs it, 0 failed" in cli_lines
    assert "not_computed" not in cli_lines


def _summary(**changes: object) -> RunSummary:
    base = RunSummary(
        documents_seen=5,
        documents_parsed=2,
        documents_failed=(FailedDocument("bad.pdf", "it is encrypted", FailureReason.ENCRYPTED),),
        chunks_written=7,
        chunks_embedded=3,
        chunks_reused=4,
        unchanged=2,
        changed=1,
        added=1,
        deleted=1,
        acl_only=0,
    )
    return RunSummary(**{**base.__dict__, **changes})


def test_the_ingest_report_renders_the_json_and_the_text_of_trove_ingest(tmp_path, monkeypatch):
    repair = RepairSummary("the index is missing", 3, 0, 0, 0)
    ingest = IngestReport(
        {
            "docs": _summary(),
            "wiki": _summary(sync_error="page 3 failed", rebuilt=3, index_repair=repair),
        }
    )
    data = ingest.to_dict()
    assert list(data["sources"]) == ["docs", "wiki"]
    assert data["sources"]["docs"]["quarantined"] == 1
    assert data["sources"]["docs"]["documents_failed"] == [
        {"path": "bad.pdf", "reason": "it is encrypted", "reason_class": "encrypted"}
    ]
    assert data["sources"]["wiki"]["index_repair"]["rewritten_from_state"] == 3
    assert ingest.partial == ["wiki"]

    monkeypatch.setattr(trove.ingest, "ingest", lambda *args, **kwargs: ingest)
    printed = CliRunner().invoke(app, ["ingest", "--config", str(_config(tmp_path))])
    assert printed.exit_code == 3  # a listing stopped early
    rendered = _rendered(ingest_lines(ingest))
    assert len(rendered) == 2 + 2 + 1 + 1  # two sources, a failure each, the repair, the error
    cli_lines = _flat(printed.stdout)
    for line in rendered:
        assert _flat(line) in cli_lines, line


def test_the_json_the_cli_prints_is_the_reports_own(report, tmp_path, monkeypatch):
    monkeypatch.setattr(trove.status, "status_report", lambda settings, now=None: report)
    config = str(_config(tmp_path))
    printed = CliRunner().invoke(app, ["status", "--json", "--config", config])
    assert printed.exit_code == 1  # the report has problems
    assert json.loads(printed.stdout) == report.to_dict()

    partial = IngestReport({"docs": _summary(), "wiki": _summary(sync_error="page 3 failed")})
    monkeypatch.setattr(trove.ingest, "ingest", lambda *args, **kwargs: partial)
    printed = CliRunner().invoke(app, ["ingest", "--json", "--config", config])
    assert printed.exit_code == 3  # a listing stopped early
    assert json.loads(printed.stdout) == partial.to_dict()

    complete = IngestReport({"docs": _summary()})
    monkeypatch.setattr(trove.ingest, "ingest", lambda *args, **kwargs: complete)
    for flags in (["--json"], []):
        printed = CliRunner().invoke(app, ["ingest", *flags, "--config", config])
        assert printed.exit_code == 0, printed.stdout


def test_paths_and_reasons_with_brackets_are_printed_as_they_are(tmp_path, monkeypatch):
    # Rich markup in a file name or an error message must be text, not styling (or a crash).
    odd = QuarantinedDocument(
        "docs:x", "notes/[draft] [/x].md", "v1", "parse", "bad [bold]x[/bold]",
        FailureReason.MALFORMED, NOW, NOW,
    )  # fmt: skip
    sources = {"docs": SourceReport(_status(failures=(odd,)), _agreement(ok=True))}
    report = StatusReport(sources, {"backend": "embedded", "ready": True, "chunks": 1,
                                    "documents": 1, "error": None}, (), ())  # fmt: skip
    monkeypatch.setattr(trove.status, "status_report", lambda settings, now=None: report)
    config = str(_config(tmp_path))
    printed = CliRunner().invoke(app, ["status", "--config", config])
    assert printed.exit_code == 0, printed.output
    assert "failed notes/[draft] [/x].md: bad [bold]x[/bold]" in printed.stdout

    failed = FailedDocument("notes/[draft] [/x].md", "bad [/x]", FailureReason.MALFORMED)
    ingest = IngestReport({"docs": _summary(documents_failed=(failed,), sync_error="[/y] 503")})
    monkeypatch.setattr(trove.ingest, "ingest", lambda *args, **kwargs: ingest)
    printed = CliRunner().invoke(app, ["ingest", "--config", config])
    assert printed.exit_code == 3, printed.output
    assert "quarantined notes/[draft] [/x].md (malformed): bad [/x]" in printed.stdout
    assert "listing stopped early: [/y] 503" in printed.stdout
