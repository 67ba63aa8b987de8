"""The connector contract: what every source (files, Confluence, Graph, S3, web) implements.

A connector answers three reads, after the capability split Onyx uses
(``connectors/interfaces.py``) and the slim listing that drives pruning:

* :meth:`Connector.changes` — what changed since an opaque cursor, as a stream
  of :class:`ChangeBatch` es. Each batch carries the cursor to resume *after*
  it; the pipeline persists that cursor only once the batch's documents are
  committed to the index, so a crash or an error mid-run resumes from the last
  committed batch and never skips a change. ``None`` means "from the start".
* :meth:`Connector.list_ids` — every document that exists now, as id, version
  stamp and ACL only (no content): deletions are the manifest minus this
  listing, and an ACL that differs from the manifest's is re-applied without
  re-embedding (permission re-sync).
* :meth:`Connector.fetch` — one document by id, with its bytes.

Per-document problems are :class:`~connectors.models.DocumentFailure` s in the
batch (the run goes on); a source that cannot be read at all raises
:class:`~connectors.errors.ConnectorError`.

Sources with groups (Confluence groups, Entra groups, SharePoint site groups)
also implement :class:`GroupSource`: a snapshot of memberships that the group
directory stores and the retrieval layer uses to expand a caller's identity at
query time, so a membership change never rewrites a chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from connectors.models import DocumentFailure, SourceDocument
from core.acl import Acl


@dataclass(frozen=True)
class ChangeBatch:
    """Changes since the previous cursor, up to ``cursor``.

    ``complete`` is set on the last batch of a *full* listing (filesystem, S3,
    a web crawl): together the run's batches then name every document that
    exists, and the pipeline deletes what the manifest has and they do not.
    Incremental sources (Confluence CQL, Graph delta) report ``deleted``
    explicitly and leave ``complete`` false.
    """

    documents: list[SourceDocument] = field(default_factory=list)
    failures: list[DocumentFailure] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # doc ids
    cursor: str | None = None  # resume point after this batch; None keeps the previous one
    complete: bool = False


@dataclass(frozen=True)
class DocumentStamp:
    """A document as the slim listing reports it: enough to prune and re-sync ACLs."""

    doc_id: str
    version: str
    acl: Acl
    path: str = ""


@runtime_checkable
class Connector(Protocol):
    """One configured source."""

    source: str

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]: ...

    def list_ids(self) -> Iterator[DocumentStamp]: ...

    def fetch(self, doc_id: str) -> SourceDocument: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DirectoryUser:
    """A person as a source knows them: its native token and the identities a caller may use.

    ``token`` is the principal token the source's ACLs use for this person
    (``{source}:user:{native id}``); ``identities`` are the e-mail addresses,
    UPNs or login names a verified caller can present (lower-case).
    """

    token: str
    identities: frozenset[str]


@dataclass(frozen=True)
class GroupSnapshot:
    """Every membership a source reports, with nesting already flattened.

    ``members`` maps a group token (as chunk ACLs carry it) to the member
    tokens and identities in it. ``tenant_token``, when set, is granted to every
    user of ``users`` (e.g. a SharePoint "people in your organisation" link).
    """

    source: str
    members: dict[str, frozenset[str]]
    users: list[DirectoryUser] = field(default_factory=list)
    tenant_token: str | None = None


@runtime_checkable
class GroupSource(Protocol):
    def sync_groups(self) -> GroupSnapshot: ...


_Block = TypeVar("_Block")


def settings_block(
    settings: object, expected: type[_Block], source_type: str, connector: str
) -> _Block:
    """``settings`` when it is the ``<type>:`` block ``connector`` needs; a ValueError otherwise."""
    if not isinstance(settings, expected):
        article = "an" if source_type == "s3" or source_type[0] in "aeiou" else "a"
        got = "none" if settings is None else type(settings).__name__
        raise ValueError(f"{connector} needs {article} {source_type} source's block, got {got}")
    return settings
