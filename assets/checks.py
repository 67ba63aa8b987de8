"""Asset checks on the search index, computed right after each write."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from core.acl import Acl
from pipelines.index_check import FIX, check_index
from pipelines.store import StagingStore
from retrieval.index.base import IndexBackend


def _source_prefix(source: str) -> str:
    return f"{source}:"


def source_acls(index: IndexBackend, source: str) -> dict[str, Acl | None]:
    """chunk_id -> ACL for the source's chunks: read once, shared by the checks below."""
    prefix = _source_prefix(source)
    return {cid: acl for cid, acl in index.all_acls().items() if cid.startswith(prefix)}


def acl_coverage(
    acls: Mapping[str, Acl | None], store: StagingStore, source: str
) -> dg.AssetCheckResult:
    """Every indexed chunk of the source carries an ACL, and it is the one the policy decided."""
    from assets.ingest import ACL_COVERAGE_CHECK

    manifest_fp = {doc_id: entry.acl_fingerprint for doc_id, entry in store.manifest().items()}
    missing: list[str] = []
    mismatched: list[str] = []
    fail_closed = checked = 0
    for chunk_id, acl in acls.items():
        checked += 1
        doc_id = chunk_id.rsplit("#", 1)[0]
        if acl is None:
            missing.append(chunk_id)
            continue
        if not acl.grants_anyone:
            fail_closed += 1
        expected = manifest_fp.get(doc_id)
        if expected is not None and expected != acl.fingerprint():
            mismatched.append(chunk_id)
    return dg.AssetCheckResult(
        check_name=ACL_COVERAGE_CHECK,
        passed=not missing and not mismatched,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "chunks_checked": checked,
            "chunks_without_acl": len(missing),
            "chunks_with_stale_acl": len(mismatched),
            "chunks_fail_closed": fail_closed,
            "examples": dg.MetadataValue.json((missing + mismatched)[:10]),
        },
    )


def index_matches_manifest(
    acls: Mapping[str, Acl | None], store: StagingStore, index: IndexBackend, source: str
) -> dg.AssetCheckResult:
    """The index holds exactly what the manifest lists: no orphans, none missing, and every
    document at the version and ACL the manifest recorded (see pipelines/index_check.py)."""
    from assets.ingest import MANIFEST_CHECK

    expected: set[str] = set()
    for entry in store.manifest().values():
        expected.update(entry.chunk_ids)
    actual = set(acls)
    orphans = sorted(actual - expected)
    missing = sorted(expected - actual)
    agreement = check_index(store, index, source, thorough=True)
    passed = not orphans and not missing and agreement.ok
    return dg.AssetCheckResult(
        check_name=MANIFEST_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
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
            "examples": dg.MetadataValue.json(
                (orphans + missing)[:10] or agreement.to_dict()["examples"]
            ),
        },
    )


def no_redacted_values(
    index: IndexBackend, source: str, policy: str, types: list[str]
) -> dg.AssetCheckResult:
    """Under a ``redact`` policy, no value of a redacted type may be found in stored text."""
    from assets.ingest import REDACTION_CHECK
    from pipelines.pii import assert_no_values

    texts: list[str] = []
    chunk_ids: list[str] = []
    if policy == "redact":
        for doc_id in sorted(index.doc_ids()):
            if doc_id.startswith(_source_prefix(source)):
                for record in index.document_chunks(doc_id):
                    texts.append(record.text)
                    chunk_ids.append(record.chunk_id)
    violations = assert_no_values(texts, types) if texts else []
    by_type: dict[str, int] = {}
    for _, kind in violations:
        by_type[kind] = by_type.get(kind, 0) + 1
    return dg.AssetCheckResult(
        check_name=REDACTION_CHECK,
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "policy": policy,
            "chunks_checked": len(texts),
            "violations_by_type": dg.MetadataValue.json(by_type),
            "chunks_with_values": dg.MetadataValue.json(
                sorted({chunk_ids[i] for i, _ in violations})[:20]
            ),
        },
    )


def listing_complete(store: StagingStore) -> dg.AssetCheckResult:
    """The source's listing ran to the end; otherwise the run indexed a prefix and resumes later."""
    from assets.ingest import LISTING_CHECK

    error = store.counter("run.scan_error")
    return dg.AssetCheckResult(
        check_name=LISTING_CHECK,
        passed=error is None,
        severity=dg.AssetCheckSeverity.WARN,
        description="The connector listed every change; a cut-short listing commits the cursor "
        "of its last whole batch and the next run resumes from there.",
        metadata={"error": error or "none"},
    )
