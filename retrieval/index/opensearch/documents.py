"""A chunk as an OpenSearch document: ``_id``, ``_source`` and back.

Pure functions, no client. Field names match the mapping in ``queries.index_body``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core.acl import Acl, AclLayer
from core.identity import IDENTITY_FORM
from retrieval.index.base import ChunkRecord

# The largest `_id` OpenSearch accepts (bytes, UTF-8).
MAX_ID_BYTES = 512
# Ids that are hashed carry this prefix; a chunk id that itself starts with it is
# hashed too, so a passed-through id can never equal a hashed one.
HASHED_ID_PREFIX = "~sha256~"

VECTOR_FIELD = "embedding"
TEXT_FIELD = "chunk_text"
# The names in a chunk's ACL fields are in the canonical form (core.identity)
# of this version. A chunk indexed before that has no `acl_identity_form`: its
# names may be spelled otherwise, and `terms` queries compare exactly, so the ACL
# clause withholds such a chunk when it carries a deny (queries.acl_filter).
ACL_IDENTITY_FORM_FIELD = "acl_identity_form"
ACL_FIELDS = (
    "tenant_id",
    "acl_public",
    "acl_allow_users",
    "acl_allow_groups",
    "acl_deny_users",
    "acl_deny_groups",
    "acl_layer_count",
    "acl_layers",
    "acl_fingerprint",
    ACL_IDENTITY_FORM_FIELD,
)
# Restriction layers (AND of ORs, see core.acl) are indexed as tokens
# "{layer}|u:{user}" / "{layer}|g:{group}" plus a count; the query checks each
# layer position up to this many. Deeper ACLs are refused at write time.
MAX_ACL_LAYERS = 8
# Everything a search or `get_chunks` needs back; never the vector.
RECORD_FIELDS = (
    "chunk_id",
    "doc_id",
    "source_id",
    "chunk_ord",
    TEXT_FIELD,
    "title",
    "url",
    "path",
    "section",
    "pages",
    "char_start",
    "char_end",
    "doc_version",
    "doc_type",
    "modified_at",
    "metadata",
    *ACL_FIELDS,
)


def os_id(chunk_id: str) -> str:
    """The deterministic OpenSearch ``_id`` of a chunk.

    Chunk ids (``source:path#ord``) pass through when they fit in 512 UTF-8
    bytes and have no control characters; longer or odd ones become a SHA-256
    of the id. The original id is always stored in the ``chunk_id`` field.
    """
    if not chunk_id:
        raise ValueError("a chunk id must be a non-empty string")
    raw = chunk_id.encode("utf-8")
    if (
        len(raw) <= MAX_ID_BYTES
        and not chunk_id.startswith(HASHED_ID_PREFIX)
        and chunk_id.isprintable()
    ):
        return chunk_id
    return HASHED_ID_PREFIX + hashlib.sha256(raw).hexdigest()


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC; naive datetimes are UTC (the index contract)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def parse_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def acl_fields(acl: Acl) -> dict[str, Any]:
    """The ACL as indexed fields: what an ACL-only update rewrites (nothing else)."""
    fields: dict[str, Any] = {
        "tenant_id": acl.tenant,
        "acl_public": bool(acl.public),
        "acl_allow_users": sorted(acl.allow_users),
        "acl_allow_groups": sorted(acl.allow_groups),
        "acl_deny_users": sorted(acl.deny_users),
        "acl_deny_groups": sorted(acl.deny_groups),
        "acl_layer_count": len(acl.layers),
        "acl_layers": layer_tokens(acl),
        "acl_fingerprint": acl.fingerprint(),
        ACL_IDENTITY_FORM_FIELD: IDENTITY_FORM,
    }
    return fields


def layer_token(position: int, kind: str, name: str) -> str:
    return f"{position}|{kind}:{name}"


def layer_tokens(acl: Acl) -> list[str]:
    if len(acl.layers) > MAX_ACL_LAYERS:
        raise ValueError(
            f"an ACL with {len(acl.layers)} restriction layers cannot be indexed in OpenSearch "
            f"(at most {MAX_ACL_LAYERS})"
        )
    tokens = []
    for i, layer in enumerate(acl.layers):
        tokens += [layer_token(i, "u", u) for u in sorted(layer.users)]
        tokens += [layer_token(i, "g", g) for g in sorted(layer.groups)]
    return tokens


def _layers_from_tokens(count: int, tokens: Sequence[str]) -> tuple[AclLayer, ...]:
    users: list[set[str]] = [set() for _ in range(count)]
    groups: list[set[str]] = [set() for _ in range(count)]
    for token in tokens:
        position, _, rest = token.partition("|")
        kind, _, name = rest.partition(":")
        target = users if kind == "u" else groups
        target[int(position)].add(name)
    return tuple(AclLayer(frozenset(u), frozenset(g)) for u, g in zip(users, groups, strict=True))


def acl_from_source(src: Mapping[str, Any]) -> Acl:
    """The ACL of a stored chunk, its names in canonical form whatever form they were stored in."""
    return Acl(
        allow_users=frozenset(src.get("acl_allow_users") or ()),
        allow_groups=frozenset(src.get("acl_allow_groups") or ()),
        deny_users=frozenset(src.get("acl_deny_users") or ()),
        deny_groups=frozenset(src.get("acl_deny_groups") or ()),
        tenant=src.get("tenant_id") or None,
        public=bool(src.get("acl_public", False)),
        layers=_layers_from_tokens(
            int(src.get("acl_layer_count") or 0), src.get("acl_layers") or ()
        ),
    )


def to_source(record: ChunkRecord, *, updated_at: datetime | None = None) -> dict[str, Any]:
    """The ``_source`` of a chunk, vector included (``tenant_id`` null when no tenant:
    a null field does not exist for queries, which the ACL filter relies on)."""
    if record.vector is None:
        raise ValueError(f"chunk {record.chunk_id!r} has no vector")
    vector = np.asarray(record.vector, dtype=np.float32).reshape(-1)
    return {
        "chunk_id": record.chunk_id,
        "doc_id": record.doc_id,
        "source_id": record.source,
        "chunk_ord": int(record.ord),
        TEXT_FIELD: record.text,
        "title": record.title,
        "url": record.uri,
        "path": record.path,
        "section": list(record.section),
        "pages": [int(p) for p in record.pages],
        "char_start": int(record.char_start),
        "char_end": int(record.char_end),
        "doc_version": record.doc_version,
        "doc_type": record.doc_type,
        "modified_at": format_datetime(record.modified_at) if record.modified_at else None,
        "metadata": dict(record.metadata) if record.metadata else None,
        "content_hash": hashlib.sha256(record.text.encode("utf-8")).hexdigest(),
        "updated_at": format_datetime(updated_at or datetime.now(UTC)),
        **acl_fields(record.acl),
        VECTOR_FIELD: [float(x) for x in vector],
    }


def from_source(src: Mapping[str, Any]) -> ChunkRecord:
    """The record stored in ``_source`` (the vector only when asked for and present)."""
    vector = src.get(VECTOR_FIELD)
    return ChunkRecord(
        chunk_id=src["chunk_id"],
        doc_id=src["doc_id"],
        source=src["source_id"],
        ord=int(src["chunk_ord"]),
        text=src.get(TEXT_FIELD) or "",
        title=src.get("title") or "",
        uri=src.get("url") or "",
        path=src.get("path") or "",
        section=tuple(src.get("section") or ()),
        pages=tuple(int(p) for p in src.get("pages") or ()),
        char_start=int(src.get("char_start") or 0),
        char_end=int(src.get("char_end") or 0),
        doc_version=src.get("doc_version") or "",
        doc_type=src.get("doc_type") or "",
        modified_at=parse_datetime(src.get("modified_at")),
        acl=acl_from_source(src),
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
        metadata=src.get("metadata") or {},
    )
