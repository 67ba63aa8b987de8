"""The asset checks' rules as plain functions: no Dagster, no store, no index.

Each rule gets an input it passes and one it fails. The Dagster side (the adapter
and the reads) runs in tests/assets and tests/trove/test_lost_index.py.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.acl import Acl
from pipelines.checks import (
    ACL_COVERAGE_CHECK,
    FAILED_SLA_CHECK,
    GROUPS_CHECK,
    LISTING_CHECK,
    MANIFEST_CHECK,
    REDACTION_CHECK,
    acl_coverage,
    acl_groups_known,
    failed_documents_within_sla,
    index_matches_manifest,
    listing_complete,
    no_redacted_values,
)
from pipelines.index_check import FIX, IndexCheck
from pipelines.records import FailureReason, QuarantinedDocument
from retrieval.index.base import IndexGeneration

REPO = Path(__file__).resolve().parents[2]
STAFF = Acl(allow_groups=frozenset({"staff"}))
HR = Acl(allow_groups=frozenset({"hr"}))


def test_the_rules_import_without_dagster():
    probe = "import sys, pipelines.checks; print(sorted(m for m in sys.modules if 'dagster' in m))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_acl_coverage_passes_when_every_chunk_has_the_policy_acl():
    acls = {"s:a#0": STAFF, "s:a#1": STAFF, "s:b#0": Acl.empty()}
    fingerprints = {"s:a": STAFF.fingerprint(), "s:b": Acl.empty().fingerprint()}
    result = acl_coverage(acls, fingerprints)
    assert result.passed and result.name == ACL_COVERAGE_CHECK and result.severity == "error"
    assert result.metadata["chunks_checked"] == 3
    assert result.metadata["chunks_fail_closed"] == 1  # fail-closed is allowed, and counted
    assert result.metadata["examples"] == []


def test_acl_coverage_fails_on_a_missing_or_stale_acl():
    acls = {"s:a#0": None, "s:b#0": HR, "s:b#1": STAFF}
    result = acl_coverage(acls, {"s:a": STAFF.fingerprint(), "s:b": STAFF.fingerprint()})
    assert not result.passed
    assert result.metadata["chunks_without_acl"] == 1
    assert result.metadata["chunks_with_stale_acl"] == 1
    assert result.metadata["examples"] == ["s:a#0", "s:b#0"]


def _agreement(**found: tuple[str, ...]) -> IndexCheck:
    return IndexCheck(
        source="s",
        recorded=IndexGeneration("ix", 3, "c3"),
        current=IndexGeneration("ix", 4, "c4"),
        index_found=True,
        compared=True,
        manifest_documents=2,
        manifest_chunks=3,
        index_documents=2 - len(found.get("missing", ())),
        index_chunks=3,
        **found,
    )


def test_index_matches_manifest_passes_when_both_hold_the_same_chunks():
    chunks = ["s:a#0", "s:a#1", "s:b#0"]
    result = index_matches_manifest(chunks, set(chunks), _agreement())
    assert result.passed and result.name == MANIFEST_CHECK and result.description is None
    assert (result.metadata["chunks_expected"], result.metadata["chunks_in_index"]) == (3, 3)
    assert result.metadata["index_generation"] == str(IndexGeneration("ix", 4, "c4"))


def test_index_matches_manifest_fails_on_orphans_missing_chunks_or_stale_documents():
    result = index_matches_manifest(["s:a#0", "s:x#0"], {"s:a#0", "s:b#0"}, _agreement())
    assert not result.passed
    assert (result.metadata["orphaned_chunks"], result.metadata["missing_chunks"]) == (1, 1)
    assert result.metadata["examples"] == ["s:x#0", "s:b#0"]

    stale = _agreement(stale=("s:b",))
    result = index_matches_manifest(["s:a#0", "s:b#0"], {"s:a#0", "s:b#0"}, stale)
    assert not result.passed and result.metadata["stale_documents"] == 1
    assert result.metadata["examples"] == ["s:b"]
    assert result.description is not None and f"run `{FIX}`" in result.description


def test_no_redacted_values_passes_on_clean_text_and_under_other_policies():
    clean = {"s:a#0": "Call the front desk.", "s:a#1": "Email [EMAIL] for access."}
    result = no_redacted_values("redact", clean, ["email"])
    assert result.passed and result.name == REDACTION_CHECK
    assert result.metadata["chunks_checked"] == 2
    leaky = {"s:a#0": "write to ann@example.com"}
    tagged = no_redacted_values("tag", leaky, ["email"])
    assert tagged.passed and tagged.metadata["chunks_checked"] == 0  # values kept by design


def test_no_redacted_values_fails_on_a_value_left_in_the_index():
    texts = {"s:a#0": "fine", "s:a#1": "write to ann@example.com"}
    result = no_redacted_values("redact", texts, ["email"])
    assert not result.passed
    assert result.metadata["violations_by_type"] == {"email": 1}
    assert result.metadata["chunks_with_values"] == ["s:a#1"]
    assert "ann@example.com" not in repr(result)  # where, never what


def test_listing_complete_warns_on_a_cut_short_listing():
    assert listing_complete(None).passed
    result = listing_complete("page 3 failed: 503")
    assert not result.passed and result.severity == "warn" and result.name == LISTING_CHECK
    assert result.metadata["error"] == "page 3 failed: 503"


def _quarantined(path: str, first_seen: datetime) -> QuarantinedDocument:
    return QuarantinedDocument(
        f"s:{path}",
        path,
        "v1",
        "parse",
        "encrypted",
        FailureReason.ENCRYPTED,
        first_seen,
        first_seen,
    )


def test_failed_documents_within_sla():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    quarantine = [
        _quarantined("old.pdf", now - timedelta(hours=4)),
        _quarantined("new.pdf", now - timedelta(minutes=30)),
    ]
    assert failed_documents_within_sla(quarantine, timedelta(hours=6), now).passed
    assert failed_documents_within_sla(quarantine, None, now).passed  # no SLA, no deadline
    result = failed_documents_within_sla(quarantine, timedelta(hours=2), now)
    assert not result.passed and result.name == FAILED_SLA_CHECK
    assert result.metadata["failed_documents"] == 2
    assert result.metadata["overdue"] == [
        {
            "path": "old.pdf",
            "reason": "encrypted",
            "failing_since": (now - timedelta(hours=4)).isoformat(),
        }
    ]


def test_acl_groups_known():
    known = {"s:group:eng", "s:group:ops"}
    assert acl_groups_known({"s:group:eng"}, known).passed
    result = acl_groups_known({"s:group:eng", "s:group:ghost"}, known)
    assert not result.passed and result.severity == "warn" and result.name == GROUPS_CHECK
    assert result.metadata["unknown_sample"] == "s:group:ghost"
    assert result.metadata["groups_in_acls"] == 2
