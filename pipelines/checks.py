"""The rules the asset checks apply, as plain functions of what was read.

Each check takes values (ACLs by chunk, the manifest's fingerprints, the
quarantine, an :class:`~pipelines.index_check.IndexCheck`) and returns a
:class:`CheckResult`; nothing here reads a store or an index, and nothing
imports Dagster. ``assets/checks.py`` reads the inputs after each write and
turns each result into a ``dg.AssetCheckResult`` (one adapter,
``assets.metadata.asset_check_result``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from core.acl import Acl
from pipelines.index_check import FIX, IndexCheck
from pipelines.pii import assert_no_values
from pipelines.records import QuarantinedDocument

ACL_COVERAGE_CHECK = "every_chunk_has_acl"
MANIFEST_CHECK = "index_matches_manifest"
REDACTION_CHECK = "no_redacted_values_in_index"
LISTING_CHECK = "source_listing_complete"
FAILED_SLA_CHECK = "failed_documents_within_sla"
GROUPS_CHECK = "acl_groups_known"

Severity = Literal["error", "warn"]
# Metadata values are plain JSON: numbers, text, None, and lists or mappings of them.
MetadataValue = int | float | str | bool | None | list[Any] | dict[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: whether it passed, how much a failure matters, and why."""

    name: str
    passed: bool
    severity: Severity
    description: str | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


def doc_id_of(chunk_id: str) -> str:
    return chunk_id.rsplit("#", 1)[0]


def acl_coverage(
    acls: Mapping[str, Acl | None], manifest_fingerprints: Mapping[str, str | None]
) -> CheckResult:
    """Every indexed chunk carries an ACL, and it is the one the policy decided.

    ``acls`` maps a source's chunk ids to the ACL the index holds;
    ``manifest_fingerprints`` its documents to the fingerprint the manifest recorded.
    """
    missing: list[str] = []
    mismatched: list[str] = []
    fail_closed = 0
    for chunk_id, acl in acls.items():
        if acl is None:
            missing.append(chunk_id)
            continue
        if not acl.grants_anyone:
            fail_closed += 1
        expected = manifest_fingerprints.get(doc_id_of(chunk_id))
        if expected is not None and expected != acl.fingerprint():
            mismatched.append(chunk_id)
    return CheckResult(
        name=ACL_COVERAGE_CHECK,
        passed=not missing and not mismatched,
        severity="error",
        metadata={
            "chunks_checked": len(acls),
            "chunks_without_acl": len(missing),
            "chunks_with_stale_acl": len(mismatched),
            "chunks_fail_closed": fail_closed,
            "examples": (missing + mismatched)[:10],
        },
    )


def index_matches_manifest(
    chunks_in_index: Collection[str], chunks_expected: Collection[str], agreement: IndexCheck
) -> CheckResult:
    """The index holds exactly the chunks the manifest lists, each document at the version
    and ACL the manifest recorded.

    ``agreement`` is a thorough :func:`~pipelines.index_check.check_index` of the source.
    """
    actual, expected = set(chunks_in_index), set(chunks_expected)
    orphans = sorted(actual - expected)
    missing = sorted(expected - actual)
    passed = not orphans and not missing and agreement.ok
    examples = (orphans + missing)[:10] or sorted(
        [*agreement.missing, *agreement.stale, *agreement.orphaned]
    )[:10]
    return CheckResult(
        name=MANIFEST_CHECK,
        passed=passed,
        severity="error",
        description=None if passed else f"{agreement.describe()}; run `{FIX}` to rebuild",
        metadata={
            "chunks_expected": len(expected),
            "chunks_in_index": len(actual),
            "orphaned_chunks": len(orphans),
            "missing_chunks": len(missing),
            "documents_expected": agreement.manifest_documents,
            "documents_in_index": agreement.index_documents,
            "missing_documents": len(agreement.missing),
            "stale_documents": len(agreement.stale),
            "orphaned_documents": len(agreement.orphaned),
            "manifest_generation": str(agreement.recorded) if agreement.recorded else "none",
            "index_generation": str(agreement.current) if agreement.current else "none",
            "examples": examples,
        },
    )


def no_redacted_values(
    policy: str, stored_texts: Mapping[str, str], types: Sequence[str]
) -> CheckResult:
    """Under a ``redact`` policy, no value of a redacted type is left in the stored text.

    ``stored_texts`` maps chunk ids to the text the index holds; other policies check nothing.
    """
    chunk_ids = list(stored_texts) if policy == "redact" else []
    texts = [stored_texts[c] for c in chunk_ids]
    violations = assert_no_values(texts, types) if texts else []
    by_type: dict[str, int] = {}
    for _, kind in violations:
        by_type[kind] = by_type.get(kind, 0) + 1
    return CheckResult(
        name=REDACTION_CHECK,
        passed=not violations,
        severity="error",
        metadata={
            "policy": policy,
            "chunks_checked": len(texts),
            "violations_by_type": by_type,
            "chunks_with_values": sorted({chunk_ids[i] for i, _ in violations})[:20],
        },
    )


def listing_complete(scan_error: str | None) -> CheckResult:
    """The source's listing ran to the end; otherwise the run indexed a prefix and resumes later."""
    return CheckResult(
        name=LISTING_CHECK,
        passed=scan_error is None,
        severity="warn",
        description="The connector listed every change; a cut-short listing commits the cursor "
        "of its last whole batch and the next run resumes from there.",
        metadata={"error": scan_error or "none"},
    )


def failed_documents_within_sla(
    quarantine: Sequence[QuarantinedDocument], sla: timedelta | None, now: datetime
) -> CheckResult:
    """Fails (and so reports them) when documents stay failed for longer than the SLA."""
    overdue = [
        {"path": q.path, "reason": q.reason, "failing_since": q.first_seen.isoformat()}
        for q in quarantine
        if sla is not None and now - q.first_seen > sla
    ]
    return CheckResult(
        name=FAILED_SLA_CHECK,
        passed=not overdue,
        severity="warn",
        metadata={
            "failed_documents": len(quarantine),
            "failed_longer_than_sla": len(overdue),
            "sla_seconds": sla.total_seconds() if sla else None,
            "overdue": overdue[:20],
        },
    )


def acl_groups_known(groups_in_acls: Collection[str], known_groups: Collection[str]) -> CheckResult:
    """Every group the source's chunk ACLs name is in the group directory.

    An unknown group grants nobody access (safe), but usually means a sync scope
    or a permission is missing.
    """
    unknown = sorted(set(groups_in_acls) - set(known_groups))
    return CheckResult(
        name=GROUPS_CHECK,
        passed=not unknown,
        severity="warn",
        description="Every group named by the source's chunk ACLs is in the directory.",
        metadata={
            "groups_in_acls": len(set(groups_in_acls)),
            "unknown_groups": len(unknown),
            "unknown_sample": ", ".join(unknown[:20]) or "none",
        },
    )
