"""Ingestion assets, one per stage, partitioned by source.

Each body unpacks the partition, calls a stage in :mod:`pipelines.stages`, and
returns counts, durations and failures as metadata. Data moves through the
staging store on disk, never through pickled outputs, so every asset returns a
``MaterializeResult`` and downstream assets declare ``deps``.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotation types.

import functools
from collections.abc import Sequence

import dagster as dg

from assets.checks import (
    acl_coverage,
    index_matches_manifest,
    listing_complete,
    no_redacted_values,
    source_acls,
)
from assets.errors import permanent_source_errors
from assets.freshness import failed_documents_check
from assets.metadata import stage_metadata
from assets.resources import TroveResource
from core.acl_policy import AclPolicy
from pipelines.checks import (
    ACL_COVERAGE_CHECK,
    FAILED_SLA_CHECK,
    LISTING_CHECK,
    MANIFEST_CHECK,
    REDACTION_CHECK,
)
from pipelines.chunk import HFTokenCounter, chunk_document
from pipelines.index_check import CORRUPT_INDEX_FIX, IndexCheck, check_index
from pipelines.models import Chunk, ParsedDocument
from pipelines.ocr import OcrSettings
from pipelines.parse_worker import make_parse_fn, prestart_parse_workers
from pipelines.stages import (
    chunk_pending,
    embed_pending,
    parse_pending,
    scan_source,
    screen_pending,
    tag_pending,
    write_pending,
)
from pipelines.store import StagingStore, StateUnreadableError
from retrieval.index.base import IndexCorruptError, IndexNotFoundError
from retrieval.index.factory import open_index
from trove.config import Settings

GROUP = "ingest"


def _check_index(settings: Settings, store: StagingStore, source: str) -> IndexCheck:
    """The index against the source's manifest, before the change set is decided."""
    try:
        index = open_index(settings.index)
    except IndexNotFoundError:
        return check_index(store, None, source)  # deleted, or index.path moved
    except IndexCorruptError as exc:
        # Not moved aside automatically: a disk that reads wrong now may read right later.
        raise dg.Failure(
            description=f"{exc}. The index is derived data: {CORRUPT_INDEX_FIX}",
            allow_retries=False,
        ) from None  # the description says it all; `trove ingest` shows only the cause
    try:
        return check_index(store, index, source)
    finally:
        index.close()


def build_ingest_assets(
    source_names: Sequence[str], freshness_policy: dg.FreshnessPolicy | None = None
) -> list[dg.AssetsDefinition]:
    """The stage assets for the configured sources (one partition per source)."""
    partitions = dg.StaticPartitionsDefinition(list(source_names))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        description="Documents listed from the source, with ACLs and the change set "
        "(added/changed/unchanged/deleted/acl_only) against the manifest, after checking "
        "that the index holds what the manifest says (what it lost is rewritten).",
    )
    def source_documents(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        settings = trove.settings()
        config = settings.source(context.partition_key)
        try:
            store = trove.store(config.name)
        except StateUnreadableError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        index_check = _check_index(settings, store, config.name)
        with permanent_source_errors():
            result = scan_source(
                config,
                store,
                AclPolicy.from_config(config.acl),
                index_check=index_check,
                # Parsers load only when a document needs them, and then at once.
                on_content_changes=prestart_parse_workers,
            )
        for warning in result.warnings:
            context.log.warning(warning)
        return dg.MaterializeResult(metadata=stage_metadata(result))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        deps=[source_documents],
        description="Added and changed documents parsed with unstructured (text, elements, "
        "pages, headings). Failures are recorded with their reason; the batch goes on.",
    )
    def parsed_documents(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        config = trove.settings().source(context.partition_key)
        store = trove.store(config.name)
        # Guard checks (size, zip bombs, type mismatch, encryption), then a killable
        # parser process with the source's timeout and limits.
        with make_parse_fn(config.limits) as parse:
            parse.ocr = OcrSettings(config.ocr, tuple(config.ocr_languages))
            result = parse_pending(store, parse)
        for failure in result.failures:
            context.log.warning(f"could not parse {failure.path}: {failure.reason}")
        metadata = stage_metadata(result)
        # How much OCR (scanned pages, images) this run did, and what it left out.
        metadata.update(
            {k: round(v, 2) if k == "ocr_seconds" else int(v) for k, v in parse.ocr_totals.items()}
        )
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        deps=[parsed_documents],
        description="Structure-aware chunks bounded by the embedding model's tokenizer, "
        "with heading path, pages and character spans.",
    )
    def document_chunks(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        settings = trove.settings()
        embedder = trove.embedder()

        @functools.cache
        def counter() -> HFTokenCounter:
            # Loaded on first use only: an unchanged re-sync never pays for the tokenizer.
            return HFTokenCounter(embedder.tokenizer)

        def chunk(parsed: ParsedDocument) -> list[Chunk]:
            return chunk_document(
                parsed,
                counter(),
                max_tokens=settings.chunking.max_tokens,
                max_seq_length=embedder.max_seq_length,
                min_tokens=settings.chunking.min_tokens,
            )

        result = chunk_pending(trove.store(context.partition_key), chunk)
        return dg.MaterializeResult(metadata=stage_metadata(result))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        deps=[document_chunks],
        description="Content safety: PII and secrets tagged, redacted or dropped; every chunk "
        "scored for prompt injection and flagged (or dropped) per the source's policy. "
        "Counts per type only, never the values.",
    )
    def screened_chunks(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        config = trove.settings().source(context.partition_key)
        result = screen_pending(trove.store(config.name), config.pii, config.injection)
        return dg.MaterializeResult(metadata=stage_metadata(result))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        deps=[screened_chunks],
        description="Every chunk tagged with its document's ACL (fail closed: no rule and "
        "no default means nobody can read it).",
    )
    def acl_tagged_chunks(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        result = tag_pending(trove.store(context.partition_key))
        return dg.MaterializeResult(metadata=stage_metadata(result))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"pytorch"},
        deps=[acl_tagged_chunks],
        pool="embedding",
        description="Sentence-transformers embeddings of changed chunk text; unchanged text "
        "comes from the embedding cache.",
    )
    def chunk_embeddings(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        embedder = trove.embedder()
        result = embed_pending(
            trove.store(context.partition_key), embedder, trove.embedding_cache()
        )
        return dg.MaterializeResult(metadata=stage_metadata(result))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"python"},
        deps=[chunk_embeddings],
        check_specs=[
            dg.AssetCheckSpec(ACL_COVERAGE_CHECK, asset="search_index", blocking=True),
            dg.AssetCheckSpec(MANIFEST_CHECK, asset="search_index"),
            dg.AssetCheckSpec(FAILED_SLA_CHECK, asset="search_index"),
            dg.AssetCheckSpec(REDACTION_CHECK, asset="search_index", blocking=True),
            dg.AssetCheckSpec(LISTING_CHECK, asset="search_index"),
        ],
        freshness_policy=freshness_policy,
        description="The hybrid (BM25 + vector) index: the change set applied atomically, "
        "then the manifest committed.",
    )
    def search_index(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        source = context.partition_key
        store = trove.store(source)
        config = trove.settings().source(source)
        sla = config.freshness_sla
        index = trove.index(create=True)
        try:
            result = write_pending(store, index, trove.embedding_cache(), trove.embedder().model_id)
            acls = source_acls(index, source)
            checks = [
                acl_coverage(acls, store, source),
                index_matches_manifest(acls, store, index, source),
                failed_documents_check(store.failures(), sla),
                no_redacted_values(index, source, config.pii.policy, config.pii.types),
                listing_complete(store),
            ]
            stats = index.stats()
        finally:
            index.close()
        metadata = stage_metadata(result)
        metadata["index_chunks_total"] = stats.chunks
        metadata["index_documents_total"] = stats.documents
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return [
        source_documents,
        parsed_documents,
        document_chunks,
        screened_chunks,
        acl_tagged_chunks,
        chunk_embeddings,
        search_index,
    ]
