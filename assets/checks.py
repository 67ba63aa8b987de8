"""Asset checks on the search index, computed right after each write.

Each function reads what its rule needs from the index and the staging store,
applies the rule from :mod:`pipelines.checks`, and returns the result as Dagster
records it (:func:`assets.metadata.asset_check_result`).
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from assets.metadata import asset_check_result
from core.acl import Acl
from pipelines import checks
from pipelines.index_check import check_index
from pipelines.store import StagingStore
from retrieval.index.base import IndexBackend


def _source_prefix(source: str) -> str:
    return f"{source}:"


def source_acls(index: IndexBackend, source: str) -> dict[str, Acl | None]:
    """chunk_id -> ACL for the source's chunks: read once, shared by the checks below."""
    prefix = _source_prefix(source)
    return {cid: acl for cid, acl in index.all_acls().items() if cid.startswith(prefix)}


def stored_texts(index: IndexBackend, source: str) -> dict[str, str]:
    """chunk_id -> the text the index holds, for every chunk of the source."""
    prefix = _source_prefix(source)
    return {
        record.chunk_id: record.text
        for doc_id in sorted(index.doc_ids())
        if doc_id.startswith(prefix)
        for record in index.document_chunks(doc_id)
    }


def acl_coverage(
    acls: Mapping[str, Acl | None], store: StagingStore, source: str
) -> dg.AssetCheckResult:
    """Every indexed chunk of the source carries an ACL, and it is the one the policy decided."""
    fingerprints = {doc_id: entry.acl_fingerprint for doc_id, entry in store.manifest().items()}
    return asset_check_result(checks.acl_coverage(acls, fingerprints))


def index_matches_manifest(
    acls: Mapping[str, Acl | None], store: StagingStore, index: IndexBackend, source: str
) -> dg.AssetCheckResult:
    """The index holds exactly what the manifest lists (see pipelines/index_check.py)."""
    expected = {chunk_id for entry in store.manifest().values() for chunk_id in entry.chunk_ids}
    agreement = check_index(store, index, source, thorough=True)
    return asset_check_result(checks.index_matches_manifest(acls.keys(), expected, agreement))


def no_redacted_values(
    index: IndexBackend, source: str, policy: str, types: list[str]
) -> dg.AssetCheckResult:
    """Under a ``redact`` policy, no value of a redacted type may be found in stored text."""
    texts = stored_texts(index, source) if policy == "redact" else {}
    return asset_check_result(checks.no_redacted_values(policy, texts, types))


def listing_complete(store: StagingStore) -> dg.AssetCheckResult:
    """The source's listing ran to the end; otherwise the run indexed a prefix and resumes later."""
    return asset_check_result(checks.listing_complete(store.scan_error()))
