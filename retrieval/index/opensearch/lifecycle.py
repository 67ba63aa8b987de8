"""Versioned physical indexes behind one alias, and the blue/green rebuild.

Generations: the mapping's ``_meta.trove`` holds the index's
:class:`~retrieval.index.base.IndexGeneration` (a random id made with the
first index, a commit sequence, a random id per commit), bumped before each
write (``put_mapping`` of ``_meta``) and carried over by a rebuild, whose
copy holds the same chunks. An index without it was not made by Trove (or
before generations existed): the pipeline then checks it document by document.

Names: the alias ``<prefix>-chunks`` points at exactly one physical index
``<prefix>-chunks-v0001``, ``-v0002``, ... Readers and writers only ever use the
alias, so a rebuild swaps what they see in one atomic ``_aliases`` call.

Rebuild (``rebuild``): create v(N+1) with the current mapping and bulk-load
settings (refresh -1, no replicas); copy every chunk from the alias with its
stored vector (``scan``; nothing is re-embedded; a chunk without a vector stops
the rebuild); restore the serving settings and refresh; check the counts (the
old index's, and per source the manifest's if given); then atomically point the
alias at v(N+1) and drop vN. Any failure before the swap deletes v(N+1) and
leaves vN serving. Writes to the alias during a rebuild land in vN only: pause
ingestion while rebuilding.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from retrieval.index.base import IndexBackendError, IndexGeneration
from retrieval.index.opensearch import queries
from retrieval.index.opensearch.bulk import BulkAction, BulkPolicy, BulkWriter
from retrieval.index.opensearch.documents import VECTOR_FIELD
from retrieval.index.opensearch.errors import RebuildError

log = logging.getLogger(__name__)

META_KEY = "trove"  # in the mapping's _meta: the index's generation


def alias_name(prefix: str) -> str:
    return f"{prefix}-chunks"


def physical_name(prefix: str, version: int) -> str:
    if version < 1:
        raise ValueError(f"index versions start at 1, got {version}")
    return f"{alias_name(prefix)}-v{version:04d}"


def version_of(prefix: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(alias_name(prefix)) + r"-v(\d{4,})", name)
    return int(match.group(1)) if match else None


def alias_targets(client: OpenSearch, alias: str) -> list[str]:
    """The physical indexes behind ``alias`` (empty when it does not exist)."""
    try:
        found = client.indices.get_alias(name=alias)
    except os_errors.NotFoundError:
        return []
    return sorted(found)


def existing_versions(client: OpenSearch, prefix: str) -> list[int]:
    """Versions of every physical index of this prefix, also ones no alias points at."""
    rows = client.cat.indices(index=f"{alias_name(prefix)}-v*", format="json")
    versions = (version_of(prefix, row.get("index", "")) for row in rows or [])
    return sorted(v for v in versions if v is not None)


def mapping_dimensions(client: OpenSearch, index: str) -> int:
    mapping = client.indices.get_mapping(index=index)
    props = next(iter(mapping.values()))["mappings"].get("properties", {})
    vector = props.get(VECTOR_FIELD)
    if not vector or "dimension" not in vector:
        raise IndexBackendError(f"index {index} has no {VECTOR_FIELD!r} knn_vector field")
    return int(vector["dimension"])


@dataclass(frozen=True)
class IndexLayout:
    """How new physical indexes are made (from ``IndexConfig``)."""

    prefix: str
    engine: queries.Engine = "lucene"
    shards: int = 1
    replicas: int = 1

    def __post_init__(self) -> None:
        queries.check_engine(self.engine)

    @property
    def alias(self) -> str:
        return alias_name(self.prefix)

    def body(
        self,
        dimensions: int,
        *,
        bulk_load: bool = False,
        generation: IndexGeneration | None = None,
    ) -> dict[str, Any]:
        body = queries.index_body(
            dimensions,
            engine=self.engine,
            shards=self.shards,
            replicas=0 if bulk_load else self.replicas,
            refresh_interval="-1" if bulk_load else "1s",
        )
        if generation is not None:
            body["mappings"]["_meta"] = generation_meta(generation)
        return body


def generation_meta(generation: IndexGeneration) -> dict[str, Any]:
    """The mapping's ``_meta`` naming ``generation``."""
    return {META_KEY: generation.to_dict()}


def read_generation(client: OpenSearch, index: str) -> IndexGeneration | None:
    """The generation in ``index``'s mapping ``_meta``; None when it has none (not ours)."""
    mapping = client.indices.get_mapping(index=index)
    meta = next(iter(mapping.values()))["mappings"].get("_meta") or {}
    return IndexGeneration.from_dict(meta.get(META_KEY))


def write_generation(client: OpenSearch, index: str, generation: IndexGeneration) -> None:
    """Name ``generation`` in ``index``'s mapping (``_meta`` is replaced whole)."""
    client.indices.put_mapping(index=index, body={"_meta": generation_meta(generation)})


def create_first_index(client: OpenSearch, layout: IndexLayout, dimensions: int) -> str:
    """Create v(N+1) and point the alias at it; another process winning the race is fine."""
    existing = existing_versions(client, layout.prefix)
    name = physical_name(layout.prefix, (existing[-1] if existing else 0) + 1)
    try:
        body = layout.body(dimensions, generation=IndexGeneration.first())
        client.indices.create(index=name, body=body)
    except os_errors.RequestError as exc:
        if exc.error != "resource_already_exists_exception":
            raise
    targets = alias_targets(client, layout.alias)
    if targets:
        return targets[0]
    client.indices.update_aliases(body=queries.alias_swap_actions(layout.alias, None, name))
    return name


@dataclass
class RebuildReport:
    alias: str
    old_index: str
    new_index: str
    chunks: int
    by_source: dict[str, int] = field(default_factory=dict)
    dropped_old: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "old_index": self.old_index,
            "new_index": self.new_index,
            "chunks": self.chunks,
            "by_source": dict(self.by_source),
            "dropped_old": self.dropped_old,
        }


def _count_by_source(client: OpenSearch, index: str) -> dict[str, int]:
    response = client.search(index=index, body=queries.count_by_source_body())
    buckets = response["aggregations"]["sources"]["buckets"]
    return {b["key"]: int(b["doc_count"]) for b in buckets}


def _copy_actions(client: OpenSearch, source: str, dest: str) -> Iterator[BulkAction]:
    for hit in helpers.scan(
        client, index=source, query={"query": {"match_all": {}}}, size=500, preserve_order=False
    ):
        src = hit["_source"]
        if not src.get(VECTOR_FIELD):
            raise RebuildError(
                f"chunk {src.get('chunk_id', hit['_id'])!r} in {source} has no stored vector "
                f"(is {VECTOR_FIELD!r} excluded from _source?); rebuild from the pipeline instead"
            )
        yield BulkAction.index_doc(dest, hit["_id"], src)


def rebuild(
    client: OpenSearch,
    layout: IndexLayout,
    *,
    expected_by_source: Mapping[str, int] | None = None,
    drop_old: bool = True,
    bulk_policy: BulkPolicy | None = None,
) -> RebuildReport:
    """Blue/green rebuild of the alias (see the module doc); returns what was swapped.

    :param expected_by_source: chunk counts per source from the pipeline's manifest;
        when given, the new index must hold exactly these (and no other sources).
    :raises RebuildError: nothing to rebuild, or a check failed (the old index still serves).
    """
    targets = alias_targets(client, layout.alias)
    if len(targets) != 1:
        raise RebuildError(
            f"alias {layout.alias!r} points at {targets or 'no index'}; a rebuild needs exactly "
            "one (run `trove ingest` first)"
        )
    old = targets[0]
    dimensions = mapping_dimensions(client, old)
    versions = existing_versions(client, layout.prefix)
    new = physical_name(layout.prefix, max([*versions, version_of(layout.prefix, old) or 0]) + 1)
    # The copy holds the same chunks: it keeps the generation, so the pipeline's
    # record of what it committed stays true across the swap.
    generation = read_generation(client, old)
    client.indices.create(
        index=new, body=layout.body(dimensions, bulk_load=True, generation=generation)
    )
    try:
        writer = BulkWriter(client, bulk_policy)
        report = writer.write(_copy_actions(client, old, new))
        report.raise_for_failures(f"copying {old} to {new}")
        client.indices.put_settings(index=new, body=queries.serving_settings(layout.replicas, "1s"))
        client.indices.refresh(index=new)
        old_count = int(client.count(index=old)["count"])
        new_count = int(client.count(index=new)["count"])
        if new_count != old_count:
            raise RebuildError(
                f"{new} holds {new_count} chunks, {old} {old_count}; the alias was not swapped"
            )
        by_source = _count_by_source(client, new)
        if expected_by_source is not None:
            expected = {s: n for s, n in expected_by_source.items() if n}
            if by_source != expected:
                diff = {
                    s: {"index": by_source.get(s, 0), "manifest": expected.get(s, 0)}
                    for s in sorted(set(by_source) | set(expected))
                    if by_source.get(s, 0) != expected.get(s, 0)
                }
                raise RebuildError(
                    f"chunk counts of {new} disagree with the manifest: {diff}; the alias was "
                    "not swapped (re-run `trove ingest`, then rebuild)"
                )
        client.indices.update_aliases(
            body=queries.alias_swap_actions(layout.alias, old, new, drop_old=drop_old)
        )
    except BaseException:
        log.error("rebuild of %s failed; deleting %s, %s keeps serving", layout.alias, new, old)
        client.indices.delete(index=new, ignore_unavailable=True)
        raise
    return RebuildReport(layout.alias, old, new, new_count, by_source, drop_old)
