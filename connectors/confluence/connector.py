"""Confluence Cloud connector: pages and attachments with effective read ACLs, plus groups.

Reads (see :mod:`connectors.base`):

* :meth:`ConfluenceConnector.changes` — with no cursor, a full enumeration with
  v2: every configured space (``/spaces``, ``_links.next`` followed verbatim,
  filtered by the configured keys), its current pages with their storage body
  (``/spaces/{id}/pages?body-format=storage``) and, with
  ``include_attachments``, each page's attachments (``/pages/{id}/attachments``,
  bytes from ``downloadLink``). After that, CQL (v1 ``/content/search``)
  ``lastmodified >= 'yyyy-MM-dd HH:mm'`` minus the configured overlap, in the
  API user's time zone, ``order by lastmodified asc``, pages and attachments
  together, with body, version and the read restrictions of the page and its
  ancestors expanded inline; the parent chain itself is read from v2 (cached
  per run) as in every other read, so all three compute the same path and ACL.
  Cursor semantics are in :mod:`connectors.confluence.cursor`.
* :meth:`ConfluenceConnector.list_ids` — the slim listing: every current page
  and readable attachment with its version and *current* ACL. A restriction
  change on an ancestor bumps no version and CQL never reports it, so the
  pipeline re-applies ACLs by comparing these fingerprints with its manifest,
  and deletes what this listing no longer has (trashed and purged pages).
* :meth:`ConfluenceConnector.fetch` — one page or attachment by id, with bytes;
  :class:`~connectors.confluence.client.DocumentNotFound` when it is gone.
* :meth:`ConfluenceConnector.sync_groups` — groups and members (v1) for the
  query-time group directory.

Permissions are mapped in :mod:`connectors.confluence.permissions`; naming and
body shaping in :mod:`connectors.confluence.documents`.

Gotchas handled: CQL is minute-granular and in the user's time zone (overlap +
offset, de-duplication on ``(id, version)``); a 400 about the date (a DST gap)
retries once an hour earlier; the ancestors' restriction expand 404s when an
ancestor is a draft or trashed (CONFCLOUD-77618), so the search is retried
without it and those ancestors are read one by one; a CQL page with no results
but a ``next`` link ends the run; a page's (or attachment's) own 404 is a
deletion. A failed permission lookup — space permissions, the restrictions of
the page or of an ancestor, the ancestor chain itself (v2 parents, then v2
``/pages/{id}/ancestors``), a 404 included — is never a deletion: the document
is a per-document failure (not indexed with a guessed ACL), kept in the cursor
and read again at the start of the next run; in :meth:`list_ids` it is listed
with an empty ACL (fail closed) so that it is neither pruned nor readable. A
lookup that still fails after the retries (a 5xx that persists) is that page's
failure too, but only once the page itself can still be read: when that read
fails as well (every request failing, the host unreachable, credentials
refused) the source is down and the run stops; so it does when
:data:`_UNAVAILABLE_IN_A_ROW` pages in a row lose their lookups that way (the
permission API down while the rest answers). A node or space whose lookup ran
out of retries is remembered for the run, so the pages under it fail at once.
A page's attachment listing that runs out of retries is judged the same way
(and counts in the same row): the page's failure, neither it nor its
attachments indexed from a partial read, kept in the cursor; the next run reads
the page again with its attachments (listed without bytes, so the pipeline
fetches only the versions it lacks). :meth:`ConfluenceConnector.list_ids`
raises instead, since a listing without those attachments would delete them.

Scope: the source's ``include``/``exclude`` globs match a page's path and an
attachment's own path (:func:`~connectors.confluence.documents.page_path`,
through :meth:`SourceScope.selects <connectors.scope.SourceScope.selects>`).
Where a page sits is read before who may read it, so a page outside the scope
costs no permission lookup; it is never yielded, listed or fetched, a run that
meets it reports it deleted (dropped if it was indexed before), and
:meth:`ConfluenceConnector.fetch` refuses its id with a ``DocumentGone`` before
reading its body. An attachment is selected by its own path, so
``include: ["**/*.pdf"]`` reads the PDFs of pages it leaves out. A source with
neither glob reads every page: ``*`` and ``**`` match no segment that starts
with ``.``, and a title may.

Without configured ``spaces`` every current space except personal ones is read
(global, collaboration, knowledge_base and any newer type); what is left out is
logged and kept in :attr:`ConfluenceConnector.skipped_spaces`. Attachments
whose type the parser cannot read are skipped (in every read alike), and one
over ``limits.max_bytes`` is a failure without being downloaded.

Not thread-safe: one connector per run. Caches live for one call of
``changes``/``list_ids`` (and the ``fetch`` calls that follow it).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors import principals
from connectors.base import ChangeBatch, DirectoryUser, DocumentStamp, GroupSnapshot, settings_block
from connectors.confluence.client import (
    ConfluenceClient,
    ConfluenceRequestError,
    DocumentNotFound,
    NotFound,
    replace_query_param,
)
from connectors.confluence.config import ConfluenceConfig
from connectors.confluence.cursor import SyncState, cql_date, parse_time
from connectors.confluence.documents import (
    ATTACHMENT,
    PAGE,
    Node,
    attachment_path,
    document_id,
    extension,
    node_from_v2,
    page_html,
    page_path,
    split_doc_id,
    storage_of,
)
from connectors.confluence.permissions import AccessResolver, is_missing_content
from connectors.errors import ConnectorError, DocumentGone
from connectors.http import SourceUnavailable
from connectors.models import DocumentFailure, SourceDocument
from connectors.scope import ALL_DOCUMENTS, SourceScope
from core.acl import Acl
from core.formats import SUPPORTED_TYPES

log = logging.getLogger(__name__)

_RESTRICTIONS = "restrictions.read.restrictions.user,restrictions.read.restrictions.group"
_ANCESTOR_RESTRICTIONS = (
    "ancestors.restrictions.read.restrictions.user,ancestors.restrictions.read.restrictions.group"
)
# Without the ancestors' restrictions: the fallback for CONFCLOUD-77618.
CQL_EXPAND_SHORT = f"body.storage,version,space,history.lastUpdated,container,{_RESTRICTIONS}"
CQL_EXPAND = f"{CQL_EXPAND_SHORT},ancestors,{_ANCESTOR_RESTRICTIONS}"
_DATE_ERROR = re.compile(r"date|lastmodified|updated|time", re.I)
_MAX_DEPTH = 200
# ``fetch`` reuses the caches of the read that just ran, if it is this recent.
_RUN_REUSE_S = 600.0
# Pages in a row whose own reads (permission lookups, attachment listings) ran out of
# retries while the source still served the pages themselves: past this, that API is
# taken to be down and the run stops, rather than every page waiting out a retry
# budget of its own.
_UNAVAILABLE_IN_A_ROW = 5


class PermissionLookupFailed(ConnectorError):
    """Who may read a document could not be established: a per-document failure,
    retried next run (never a deletion, never a guessed ACL)."""


class AttachmentListingFailed(ConnectorError):
    """A page's attachments could not be listed: the page's failure, retried next run;
    neither the page nor its attachments are indexed from a partial read."""


@dataclass(frozen=True)
class Space:
    id: str
    key: str
    name: str


@dataclass(frozen=True)
class PagePlace:
    """Where a page sits, known before who may read it: the scope is decided on
    ``path`` first, so a page outside ``include``/``exclude`` costs no permission lookup."""

    space: Space
    node: Node
    ancestors: tuple[Node, ...]
    path: str


@dataclass(frozen=True)
class PageContext:
    """Where a page sits and who may read it; shared by the page and its attachments."""

    space: Space
    node: Node
    path: str
    acl: Acl


@dataclass
class _Batch:
    documents: list[SourceDocument] = field(default_factory=list)
    failures: list[DocumentFailure] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # doc keys to read again next run

    def batch(self, cursor: str) -> ChangeBatch:
        return ChangeBatch(
            documents=self.documents, failures=self.failures, deleted=self.deleted, cursor=cursor
        )


class _Run:
    """Caches for one read of the source: spaces, nodes, restrictions, space grants."""

    def __init__(self, connector: ConfluenceConnector) -> None:
        self.connector = connector
        self.started = time.monotonic()
        self.access = AccessResolver(
            connector.client, connector.source, site_token=connector.site_token
        )
        self.nodes: dict[str, Node] = {}
        self.contexts: dict[str, PageContext] = {}
        self._spaces: list[Space] | None = None
        # Node reads that ran out of retries: a folder's failure costs one retry
        # budget per run, not one per page under it.
        self.unreadable_nodes: dict[str, SourceUnavailable] = {}
        # Lookup failures already judged (the source answers, or not); the same
        # failure raised again from a cache costs nothing and is not judged again.
        self.judged: set[SourceUnavailable] = set()
        self.unavailable_in_a_row = 0

    @property
    def spaces(self) -> list[Space]:
        if self._spaces is None:
            self._spaces = self.connector._list_spaces()
        return self._spaces

    def space_by_key(self, key: str | None) -> Space | None:
        key = (key or "").upper()
        return next((s for s in self.spaces if s.key.upper() == key), None)

    def space_by_id(self, space_id: str | None) -> Space | None:
        return next((s for s in self.spaces if s.id == str(space_id)), None)

    def node(self, node_id: str, node_type: str) -> dict[str, Any]:
        """A v2 node read; one that ran out of retries fails again at once for this run."""
        failed = self.unreadable_nodes.get(node_id)
        if failed is not None:
            raise failed
        try:
            return self.connector.client.node(node_id, node_type)
        except SourceUnavailable as exc:
            self.unreadable_nodes[node_id] = exc
            raise


class ConfluenceConnector:
    """One ``type: confluence`` source; implements ``Connector`` and ``GroupSource``.

    :param scope: the source's name, ``include``/``exclude``, ``retry`` budget and ``max_bytes``.
    :param settings: its ``confluence:`` block (site, credentials, spaces).
    :param http: an ``httpx.Client`` to send requests with (tests); one is created otherwise.
    :param sleep: how retries wait (tests pass a recorder so nothing really sleeps).
    :raises ValueError: ``settings`` is not a ``confluence:`` block.
    :raises ConnectorError: when the API token cannot be read.

    Usage::

        source = settings.source("wiki")
        connector = ConfluenceConnector(source.scope(), source.confluence)
        for batch in connector.changes(cursor):
            ...  # index batch.documents, then persist batch.cursor
    """

    def __init__(
        self,
        scope: SourceScope,
        settings: ConfluenceConfig,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.scope = scope
        self.settings = settings_block(
            settings, ConfluenceConfig, "confluence", "ConfluenceConnector"
        )
        self.source = scope.name
        # Neither glob configured: every page, dot-titled ones too (see the module doc).
        self._scoped = scope.include != ALL_DOCUMENTS or bool(scope.exclude)
        self.client = ConfluenceClient(self.settings, policy=scope.retry, http=http, sleep=sleep)
        self._run: _Run | None = None
        # "Logged-in users" space access: granted to every user the group sync lists.
        self.site_token = principals.tenant_token(self.source, urlsplit(self.client.wiki).netloc)
        self.skipped_spaces: list[str] = []  # "KEY (type)" left out by the last listing

    # -- contract -------------------------------------------------------------------

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        """Batches since ``cursor`` (``None``: everything), each with its resume cursor."""
        state = SyncState.from_cursor(cursor)
        run = self._run = _Run(self)
        if state is None or state.mode == "full":
            yield from self._full(run, state)
        else:
            yield from self._incremental(run, state)

    def list_ids(self) -> Iterator[DocumentStamp]:
        """Every current page and readable attachment with version, current ACL and path.

        Raises rather than returning a partial listing (a partial listing would
        make the pipeline delete what it missed).
        """
        run = self._run = _Run(self)
        for space in run.spaces:
            for results, _ in self._space_listing(space, None, body=False):
                for data in results:
                    yield from self._page_stamps(run, space, data)

    def _page_stamps(
        self, run: _Run, space: Space, data: dict[str, Any]
    ) -> Iterator[DocumentStamp]:
        """A listed page and its indexed attachments, those inside the scope, as stamps.

        One whose permissions cannot be read is listed all the same, so it is never
        pruned, with an empty ACL, so nobody reads it until a run can read them
        again (fail closed). When not even its ancestors can be read, its path is
        unknown: it is listed under its space, the scope unapplied.
        """
        node = node_from_v2(data)
        place: PagePlace | None
        try:
            place = self._place(run, space, data)
        except NotFound:
            return  # deleted while we listed
        except PermissionLookupFailed as exc:
            log.warning("confluence %s: %s; listed with an empty ACL", self.source, exc)
            place = None
        path = place.path if place is not None else page_path(space.key, [], node.title)
        try:
            # One whose attachments cannot be listed stops the listing: without them
            # the pipeline would delete its indexed attachments.
            attachments = self._attachments(run, node.id)
        except NotFound:
            return  # deleted while we listed
        page_wanted = place is None or self._in_scope(path)
        indexed = [
            att
            for att in attachments
            if extension(str(att.get("title") or "")) in SUPPORTED_TYPES
            and (place is None or self._attachment_in_scope(path, att))
        ]
        if not page_wanted and not indexed:
            return
        acl = Acl.empty()
        if place is not None:
            try:
                acl = self._access(run, place).acl
            except NotFound:
                return  # deleted while we listed
            except PermissionLookupFailed as exc:
                log.warning("confluence %s: %s; listed with an empty ACL", self.source, exc)
        if page_wanted:
            version = str((data.get("version") or {}).get("number", ""))
            yield DocumentStamp(document_id(self.source, PAGE, node.id), version, acl, path)
        for att in indexed:
            yield DocumentStamp(
                document_id(self.source, ATTACHMENT, str(att["id"])),
                str((att.get("version") or {}).get("number", "")),
                acl,
                attachment_path(path, str(att.get("title") or "")),
            )

    def fetch(self, doc_id: str) -> SourceDocument:
        """One document with its bytes.

        :raises DocumentNotFound: the page or attachment is gone (delete it).
        :raises DocumentGone: it is outside the source's ``include``/``exclude``; decided
            from where its page sits, before any body or attachment is read.
        :raises PermissionLookupFailed: who may read it could not be established.
        """
        parsed = split_doc_id(self.source, doc_id)
        if parsed is None:
            raise DocumentNotFound(f"{doc_id!r} is not a document id of source {self.source!r}")
        kind, native = parsed
        run = self._fetch_run()
        try:
            if kind == PAGE:
                return self._read_page(run, doc_id, native)[1]
            att = self.client.attachment(native)
            page_id = att.get("pageId")
            title = str(att.get("title") or "")
            if not page_id or extension(title) not in SUPPORTED_TYPES:
                raise DocumentNotFound(f"{doc_id} is not an attachment this source indexes")
            place = self._place_in_source(run, self.client.page(str(page_id), body=False))
            self._refuse_outside_scope(doc_id, attachment_path(place.path, title))
            ctx = self._access(run, place)
            link = att.get("downloadLink") or (att.get("_links") or {}).get("download")
            return self._attachment_document(ctx, att, content=self.client.download(str(link)))
        except NotFound as exc:
            raise DocumentNotFound(f"{doc_id} no longer exists ({exc})") from exc

    def _fetch_run(self) -> _Run:
        """The caches of the read that just ran, if it is recent; a new run's otherwise."""
        run = self._run
        if run is None or time.monotonic() - run.started > _RUN_REUSE_S:
            run = self._run = _Run(self)
        return run

    def _read_page(self, run: _Run, doc_id: str, native: str) -> tuple[PageContext, SourceDocument]:
        """One page by id, with its body, and where it sits and who may read it.

        :raises DocumentGone: it is outside the source's ``include``/``exclude``.
        :raises NotFound: it is gone.
        :raises PermissionLookupFailed: who may read it could not be established.
        """
        if self._scoped:  # where the page sits decides, before its body is read
            head = self._place_in_source(run, self.client.page(native, body=False))
            self._refuse_outside_scope(doc_id, head.path)
        data = self.client.page(native, body=True)
        place = self._place_in_source(run, data)  # the version read: its own place
        self._refuse_outside_scope(doc_id, place.path)
        ctx = self._access(run, place)
        return ctx, self._page_document(ctx, data)

    def sync_groups(self) -> GroupSnapshot:
        """Every group (by id, and by name as an alias) with its members' identities.

        Each member contributes ``{source}:user:{accountId}`` and, when visible,
        the lower-cased e-mail; every member is also a :class:`DirectoryUser`,
        and holds the site token that logged-in-users space access grants.
        """
        members: dict[str, frozenset[str]] = {}
        emails: dict[str, set[str]] = {}
        for group in self.client.groups():
            gid, name = group.get("id"), group.get("name")
            if not gid:
                log.warning("confluence %s: group %r has no id; skipped", self.source, name)
                continue
            identities: set[str] = set()
            for member in self.client.group_members(str(gid)):
                account = member.get("accountId")
                if not account:
                    continue
                identities.add(principals.user_token(self.source, str(account)))
                seen = emails.setdefault(str(account), set())
                email = member.get("email")
                if email and str(email).strip():
                    identities.add(principals.email(str(email)))
                    seen.add(principals.email(str(email)))
            frozen = frozenset(identities)
            members[principals.group_token(self.source, str(gid))] = frozen
            if name:
                members.setdefault(principals.group_token(self.source, str(name)), frozen)
        users = [
            DirectoryUser(principals.user_token(self.source, account), frozenset(addresses))
            for account, addresses in sorted(emails.items())
        ]
        # Everyone listed here can log in to the site: "logged-in users" space access.
        return GroupSnapshot(
            source=self.source, members=members, users=users, tenant_token=self.site_token
        )

    def close(self) -> None:
        self.client.close()

    # -- full enumeration (v2) -------------------------------------------------------

    @property
    def _limit(self) -> int:
        return self.settings.page_limit

    @property
    def _overlap(self) -> timedelta:
        return timedelta(minutes=self.settings.overlap_minutes)

    def _list_spaces(self) -> list[Space]:
        wanted = {k.upper() for k in self.settings.spaces}
        found: dict[str, Space] = {}
        skipped: list[str] = []
        for data in self.client.spaces(self.settings.spaces, 250):
            key = str(data.get("key") or "")
            if not key or (wanted and key.upper() not in wanted):
                continue
            kind = str(data.get("type") or "").lower()
            if not wanted and kind == "personal":
                skipped.append(f"{key} ({kind})")
                continue
            found[key] = Space(str(data["id"]), key, str(data.get("name") or key))
        self.skipped_spaces = sorted(skipped)
        if skipped:
            log.warning(
                "confluence %s: %d personal space(s) skipped (name them in `spaces` to read "
                "them): %s",
                self.source,
                len(skipped),
                ", ".join(self.skipped_spaces[:20]) + (" ..." if len(skipped) > 20 else ""),
            )
        missing = sorted(wanted - {k.upper() for k in found})
        if missing:
            log.warning(
                "confluence %s: configured spaces not found or not visible to the API user: %s",
                self.source,
                ", ".join(missing),
            )
        return [found[k] for k in sorted(found)]

    def _full(self, run: _Run, state: SyncState | None) -> Iterator[ChangeBatch]:
        spaces = run.spaces  # first request: its Date header is the server's "now"
        if state is None:
            started = self.client.last_server_time or datetime.now(UTC)
            state = SyncState(mode="full", watermark=started)
        for space in spaces:
            if space.key in state.done:
                continue
            resume = state.next if state.space == space.key else None
            for results, nxt in self._space_listing(space, resume, body=True):
                out = _Batch()
                for data in results:
                    self._emit_v2_page(run, space, data, out, state)
                state.retry.extend(out.retry)
                if nxt:
                    state.space, state.next = space.key, nxt
                else:
                    state.done.append(space.key)
                    state.space = state.next = None
                state.prune(self._overlap)
                yield out.batch(state.to_cursor())
        final = SyncState(
            mode="cql",
            watermark=state.watermark,
            seen=state.seen,
            spaces=[s.key for s in spaces],
            retry=state.retry,
        )
        final.prune(self._overlap)
        yield ChangeBatch(cursor=final.to_cursor())

    def _space_listing(
        self, space: Space, resume: str | None, *, body: bool
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """The space's pages, page by page; from ``resume`` when that saved link still works.

        Only the first request may fail softly (a space deleted since it was
        listed); a failure further on propagates, so a listing is never silently short.
        """
        if resume:
            pages = self.client.space_pages(space.id, self._limit, body=body, resume=resume)
            try:
                first = next(pages)
            except ConfluenceRequestError as exc:
                log.warning(
                    "confluence %s: saved position in space %s is no longer valid (%s); "
                    "re-reading the space",
                    self.source,
                    space.key,
                    exc.status,
                )
            else:
                yield first
                yield from pages
                return
        pages = self.client.space_pages(space.id, self._limit, body=body)
        try:
            first = next(pages)
        except NotFound:
            log.warning("confluence %s: space %s disappeared while listing", self.source, space.key)
            return
        yield first
        yield from pages

    def _emit_v2_page(
        self, run: _Run, space: Space, data: dict[str, Any], out: _Batch, state: SyncState
    ) -> None:
        page_id = str(data.get("id") or "")
        page_doc = document_id(self.source, PAGE, page_id)
        try:
            place = self._place(run, space, data)
            attachments = self._attachments(run, page_id)
            page_wanted = self._in_scope(place.path)
            if not page_wanted and not any(
                self._attachment_in_scope(place.path, att) for att in attachments
            ):
                # Nothing of it is inside include/exclude: dropped if it was indexed before.
                out.deleted.append(page_doc)
                out.deleted.extend(
                    document_id(self.source, ATTACHMENT, str(att.get("id"))) for att in attachments
                )
                return
            ctx = self._access(run, place)
        except (PermissionLookupFailed, AttachmentListingFailed) as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, str(exc)))
            out.retry.append(f"{PAGE}:{page_id}")
            return
        except NotFound:
            out.deleted.append(page_doc)
            return
        except ConfluenceRequestError as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, f"unreadable: {exc}"))
            return
        except (KeyError, TypeError, ValueError) as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, f"malformed page: {exc!r}"))
            return
        if page_wanted:
            out.documents.append(self._page_document(ctx, data))
            version = data.get("version") or {}
            state.remember(
                f"page:{page_id}",
                str(version.get("number", "")),
                parse_time(version.get("createdAt")),
            )
        else:
            out.deleted.append(page_doc)  # outside include/exclude; some attachments are not
        for att in attachments:
            self._emit_attachment(ctx, att, out, state)

    # -- incremental (CQL) -------------------------------------------------------------

    def _cql(self, start: datetime, spaces: list[Space]) -> str:
        kinds = "type in (page, attachment)" if self.settings.include_attachments else "type = page"
        # The spaces listed (every non-personal type when none is configured): CQL's
        # `space.type` knows only global/personal/favourite, not the newer types.
        keys = ", ".join("'" + s.key.replace("'", "") + "'" for s in spaces)
        where = f"space in ({keys})"
        since = cql_date(start, self.settings.timezone_offset_minutes)
        return f"{kinds} and {where} and lastmodified >= '{since}' order by lastmodified asc"

    def _incremental(self, run: _Run, state: SyncState) -> Iterator[ChangeBatch]:
        spaces = run.spaces
        if not spaces:
            yield ChangeBatch(cursor=state.to_cursor())
            return
        covered = set(state.spaces) if state.spaces is not None else {s.key for s in spaces}
        added = [s.key for s in spaces if s.key not in covered]
        if added:
            # CQL would show only their recent edits: read the new spaces in full first,
            # keeping the watermark so the next run catches up on the others.
            log.info("confluence %s: new spaces %s; enumerating them", self.source, added)
            yield from self._full(
                run,
                SyncState(
                    mode="full",
                    watermark=state.watermark,
                    seen=state.seen,
                    done=[s.key for s in spaces if s.key in covered],
                    retry=state.retry,
                ),
            )
            return
        state.spaces = [s.key for s in spaces]
        if state.retry:
            yield self._retry_failed(state)
        start = state.watermark - self._overlap
        expand = CQL_EXPAND
        next_link: str | None = None
        shifted = False
        yielded = False
        while True:
            cql = self._cql(start, spaces)
            try:
                data = self.client.search(cql, expand, self._limit, next_link=next_link)
            except NotFound as exc:
                if expand != CQL_EXPAND:
                    raise
                log.warning(
                    "confluence %s: search with ancestors' restrictions failed (%s%s); "
                    "retrying without them and reading ancestors one by one",
                    self.source,
                    exc.detail or "404",
                    ", CONFCLOUD-77618" if is_missing_content(exc) else "",
                )
                expand = CQL_EXPAND_SHORT
                if next_link:
                    next_link = replace_query_param(next_link, "expand", expand)
                continue
            except ConfluenceRequestError as exc:
                if (
                    exc.status == 400
                    and next_link is None
                    and not shifted
                    and _DATE_ERROR.search(exc.detail or "")
                ):
                    log.warning(
                        "confluence %s: CQL refused the date %r (%s); retrying an hour earlier "
                        "(daylight-saving gap)",
                        self.source,
                        cql_date(start, self.settings.timezone_offset_minutes),
                        exc.detail,
                    )
                    start -= timedelta(hours=1)
                    shifted = True
                    continue
                raise
            results = [r for r in data.get("results") or [] if isinstance(r, dict)]
            nxt = (data.get("_links") or {}).get("next")
            out = _Batch()
            for item in results:
                self._emit_cql_item(run, item, out, state)
                when = _item_time(item)
                if when is not None and when > state.watermark:
                    state.watermark = when
            state.retry.extend(out.retry)
            state.prune(self._overlap)
            if results or not yielded:
                yield out.batch(state.to_cursor())
                yielded = True
            if not results or not nxt:
                if not results and nxt:
                    log.info("confluence %s: empty search page with a next link; done", self.source)
                return
            next_link = nxt

    def _retry_failed(self, state: SyncState) -> ChangeBatch:
        """Documents whose permission lookup or attachment listing failed last run, read
        again by id; a page with its attachments, which CQL names only once they change."""
        out = _Batch()
        for key in sorted(set(state.retry)):
            kind, _, native = key.partition(":")
            doc_id = document_id(self.source, kind, native)
            ctx: PageContext | None = None
            attachments: list[dict[str, Any]] = []
            try:
                if kind == PAGE:
                    run = self._fetch_run()
                    ctx, doc = self._read_page(run, doc_id, native)
                    attachments = self._attachments(run, native)
                else:
                    doc = self.fetch(doc_id)
            except (DocumentGone, NotFound):  # gone, or outside include/exclude now
                out.deleted.append(doc_id)
            except ConnectorError as exc:
                out.failures.append(DocumentFailure(doc_id, doc_id, f"retry failed: {exc}"))
                out.retry.append(key)
            else:
                out.documents.append(doc)
                state.remember(key, doc.version, doc.modified_at)  # CQL's overlap: no re-read
                if ctx is not None:
                    for att in attachments:
                        # Without bytes: the pipeline fetches only the versions it lacks.
                        self._emit_attachment(ctx, att, out, state, download=False)
        log.info(
            "confluence %s: %d document(s) from the last run's failed permission lookups "
            "or attachment listings read again; %d still failing",
            self.source,
            len(set(state.retry)),
            len(out.retry),
        )
        state.retry = out.retry
        return out.batch(state.to_cursor())

    def _emit_cql_item(
        self, run: _Run, item: dict[str, Any], out: _Batch, state: SyncState
    ) -> None:
        kind = item.get("type")
        item_id = str(item.get("id") or "")
        version = str((item.get("version") or {}).get("number", ""))
        space = run.space_by_key((item.get("space") or {}).get("key"))
        if space is None or not item_id:
            return
        if kind == "page":
            key = f"page:{item_id}"
            if not state.already_seen(key, version) and self._emit_cql_page(run, space, item, out):
                state.remember(key, version, _item_time(item))
        elif kind == "attachment" and self.settings.include_attachments:
            key = f"att:{item_id}"
            if not state.already_seen(key, version) and self._emit_cql_attachment(
                run, space, item, out
            ):
                state.remember(key, version, _item_time(item))

    def _emit_cql_page(self, run: _Run, space: Space, item: dict[str, Any], out: _Batch) -> bool:
        page_id = str(item["id"])
        page_doc = document_id(self.source, PAGE, page_id)
        try:
            # Restrictions that came inline save a request per page and per ancestor.
            for raw in item.get("ancestors") or []:
                run.access.prime(str(raw["id"]), (raw.get("restrictions") or {}).get("read"))
            run.access.prime(page_id, (item.get("restrictions") or {}).get("read"))
            # The chain itself comes from v2, as in list_ids and the first run, so every
            # read computes the same path and ACL (v1 ancestors may leave out folders).
            # A 404 here means the search index still lists a page that is gone.
            place = self._place(run, space, self.client.page(page_id, body=False))
            if not self._in_scope(place.path):
                out.deleted.append(page_doc)  # outside include/exclude: dropped if indexed
                return False
            ctx = self._access(run, place)
        except PermissionLookupFailed as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, str(exc)))
            out.retry.append(f"{PAGE}:{page_id}")
            return False
        except NotFound:
            out.deleted.append(page_doc)
            return False
        except ConfluenceRequestError as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, f"unreadable: {exc}"))
            return False
        except (KeyError, TypeError, ValueError) as exc:
            out.failures.append(DocumentFailure(page_doc, space.key, f"malformed result: {exc!r}"))
            return False
        title = str(item.get("title") or ctx.node.title)
        version = item.get("version") or {}
        content = page_html(title, storage_of(item))
        out.documents.append(
            SourceDocument(
                doc_id=page_doc,
                source=self.source,
                path=ctx.path,
                uri=self._uri((item.get("_links") or {}).get("webui"), page_id),
                title=title,
                version=str(version.get("number", "")),
                size=len(content),
                modified_at=parse_time(version.get("when")),
                doc_type="html",
                acl=ctx.acl,
                content=content,
                author=((version.get("by") or {}).get("displayName")) or None,
            )
        )
        return True

    def _emit_cql_attachment(
        self, run: _Run, space: Space, item: dict[str, Any], out: _Batch
    ) -> bool:
        container = item.get("container") or {}
        if container.get("type", "page") != "page" or not container.get("id"):
            return False  # attachments of blog posts and other content are not indexed
        title = str(item.get("title") or "")
        if extension(title) not in SUPPORTED_TYPES:
            return False
        att_doc = document_id(self.source, ATTACHMENT, str(item["id"]))
        try:
            ctx = run.contexts.get(str(container["id"]))
            if ctx is None:
                place = self._place(run, space, self.client.page(str(container["id"]), body=False))
                if not self._in_scope(attachment_path(place.path, title)):
                    out.deleted.append(att_doc)  # outside include/exclude: dropped if indexed
                    return False
                ctx = self._access(run, place)
        except PermissionLookupFailed as exc:
            out.failures.append(DocumentFailure(att_doc, space.key, str(exc)))
            out.retry.append(f"{ATTACHMENT}:{item['id']}")
            return False
        except NotFound:
            out.deleted.append(att_doc)  # its page is gone, and the attachment with it
            return False
        except ConfluenceRequestError as exc:
            out.failures.append(DocumentFailure(att_doc, space.key, f"unreadable page: {exc}"))
            return False
        extensions = item.get("extensions") or {}
        v2_shape = {
            "id": item["id"],
            "title": title,
            "fileSize": extensions.get("fileSize"),
            "mediaType": extensions.get("mediaType"),
            "version": {
                "number": (item.get("version") or {}).get("number"),
                "createdAt": (item.get("version") or {}).get("when"),
            },
            "downloadLink": (item.get("_links") or {}).get("download"),
            "webuiLink": (item.get("_links") or {}).get("webui"),
        }
        return self._emit_attachment(ctx, v2_shape, out, None)

    # -- shared mapping ------------------------------------------------------------------

    def _in_scope(self, path: str) -> bool:
        """Inside the source's ``include``/``exclude`` (every reading of ``path``)."""
        return not self._scoped or self.scope.selects((path,))

    def _attachment_in_scope(self, page: str, att: dict[str, Any]) -> bool:
        """An attachment is selected by its own path (its page's, then its file name)."""
        return self._in_scope(attachment_path(page, str(att.get("title") or "")))

    def _refuse_outside_scope(self, doc_id: str, path: str) -> None:
        """``fetch``'s answer for an id the listing would not name now (an ``exclude``
        added since): gone, so the pipeline drops it, as the filesystem connector does."""
        if not self._in_scope(path):
            raise DocumentGone(
                f"{doc_id!r} ({path}) is outside the include/exclude globs "
                f"of source {self.source!r}"
            )

    def _place_in_source(self, run: _Run, data: dict[str, Any]) -> PagePlace:
        """Place of a page fetched by id: its space must be one this source reads."""
        space = run.space_by_id(data.get("spaceId"))
        if space is None:
            raise NotFound(f"page {data.get('id')} is not in a configured space", 404)
        return self._place(run, space, data)

    def _place(self, run: _Run, space: Space, data: dict[str, Any]) -> PagePlace:
        """Where a v2 page sits: its ancestors (read, or cached for the run) and path.

        :raises PermissionLookupFailed: the ancestor chain could not be read; it
            decides the ACL as well as the path (never a deletion).
        :raises NotFound: the page itself is gone.
        :raises SourceUnavailable, SourceAuthError: the source itself is failing.
        """
        node = node_from_v2(data)
        run.nodes[node.id] = node
        try:
            ancestors = self._ancestors(run, node)
        except (ConfluenceRequestError, SourceUnavailable) as exc:
            raise self._lookup_failed(run, node.id, exc) from None
        path = page_path(space.key, [a.title for a in ancestors], node.title)
        return PagePlace(space, node, tuple(ancestors), path)

    def _access(self, run: _Run, place: PagePlace) -> PageContext:
        """Who may read the page: the space's viewers ∩ its restriction ∩ every ancestor's.

        :raises PermissionLookupFailed: the restrictions or the space permissions could
            not be read (a 404 included): never a deletion, never a guessed ACL.
        :raises NotFound: the page itself is gone.
        :raises SourceUnavailable, SourceAuthError: the source itself is failing.
        """
        space, node = place.space, place.node
        try:
            acl = run.access.acl(space.id, space.key, [a.id for a in place.ancestors], node.id)
        except (ConfluenceRequestError, SourceUnavailable) as exc:
            raise self._lookup_failed(run, node.id, exc) from None
        run.unavailable_in_a_row = 0
        ctx = PageContext(space, node, place.path, acl)
        run.contexts[node.id] = ctx
        return ctx

    def _attachments(self, run: _Run, page_id: str) -> list[dict[str, Any]]:
        """The page's attachments, all types (none without ``include_attachments``).

        :raises AttachmentListingFailed: the listing ran out of retries while the
            source still serves the page (see :meth:`_judge_page_read`).
        :raises NotFound: the page itself is gone.
        :raises SourceUnavailable, SourceAuthError: the source itself is failing.
        """
        if not self.settings.include_attachments:
            return []
        try:
            return list(self.client.page_attachments(page_id, self._limit))
        except SourceUnavailable as exc:
            self._judge_page_read(run, page_id, exc, "attachment listings")
            raise AttachmentListingFailed(
                f"attachments of page {page_id} could not be listed ({exc}); the page and "
                "its attachments are not indexed, retried next run"
            ) from None

    def _lookup_failed(
        self, run: _Run, page_id: str, exc: ConnectorError
    ) -> PermissionLookupFailed:
        """The page's own failure for a permission lookup that failed with ``exc``;
        raises instead when the failure is not the page's (see :meth:`_judge_page_read`)."""
        self._judge_page_read(run, page_id, exc, "permission lookups")
        return PermissionLookupFailed(
            f"permissions of page {page_id} could not be read ({exc}); "
            "not indexed, retried next run"
        )

    def _judge_page_read(self, run: _Run, page_id: str, exc: ConnectorError, what: str) -> None:
        """Raise when a read about one page (``what``: its permission lookups, its
        attachment listing) failed with ``exc`` for a reason that is not the page's.

        A 404 is a deletion only when the page itself answers 404. A read that ran
        out of retries is the page's failure only while the source still serves the
        page itself: when that read fails too (every request failing, an unreachable
        host, refused credentials) its error stops the run, and so does the
        :data:`_UNAVAILABLE_IN_A_ROW`-th such page in a row (a successful
        :meth:`_access` ends the row).
        """
        if isinstance(exc, NotFound):
            self._raise_if_gone(page_id)
        elif isinstance(exc, SourceUnavailable) and exc not in run.judged:
            run.judged.add(exc)
            self._raise_if_gone(page_id)
            run.unavailable_in_a_row += 1
            if run.unavailable_in_a_row >= _UNAVAILABLE_IN_A_ROW:
                raise SourceUnavailable(
                    f"the {what} of {run.unavailable_in_a_row} pages in a row still failed "
                    f"after their retries (the last: {exc}); the source cannot serve them now"
                ) from None

    def _raise_if_gone(self, page_id: str) -> None:
        """:class:`NotFound` when the page itself is gone: only its own 404 is a deletion.

        Any other failure of that read but a refusal of the page (a source that is
        down, credentials refused) propagates: it is the source's, not the page's.
        """
        try:
            self.client.page(page_id, body=False)
        except NotFound:
            raise
        except ConfluenceRequestError:
            pass  # unknown either way: the caller reports a failure

    def _ancestors(self, run: _Run, node: Node) -> list[Node]:
        """Ancestors top-down: the v2 parent chain (titles, folders), or v2
        ``/pages/{id}/ancestors`` when a parent cannot be shown (a draft or trashed
        ancestor, a type v2 serves elsewhere). Raises when neither works."""
        chain: list[Node] = []
        visited = {node.id}
        current = node
        try:
            while current.parent_id:
                if current.parent_id in visited or len(chain) >= _MAX_DEPTH:
                    raise ConfluenceRequestError(f"parent chain of {node.id} loops", 409)
                parent = run.nodes.get(current.parent_id)
                if parent is None:
                    data = run.node(current.parent_id, current.parent_type or "page")
                    parent = node_from_v2(data, current.parent_type or "page")
                    run.nodes[parent.id] = parent
                chain.append(parent)
                visited.add(parent.id)
                current = parent
        except NotFound:
            log.info(
                "confluence %s: v2 cannot show an ancestor of %s; using /pages/{id}/ancestors",
                self.source,
                node.id,
            )
            return [self._ancestor_node(run, a) for a in self.client.page_ancestors(node.id)]
        chain.reverse()
        return chain

    def _ancestor_node(self, run: _Run, raw: dict[str, Any]) -> Node:
        """An ancestor listed by id and type: its title from the cache or v2, if v2 shows it."""
        ancestor_id, kind = str(raw["id"]), str(raw.get("type") or "page")
        if ancestor_id in run.nodes:
            return run.nodes[ancestor_id]
        try:
            data = (
                self.client.page_any_status(ancestor_id)
                if kind == "page"
                else self.client.node(ancestor_id, kind)
            )
            node = node_from_v2(data, kind)
        except NotFound:
            node = Node(ancestor_id, kind, "")  # not shown at all: no title in the path
        run.nodes[ancestor_id] = node
        return node

    def _uri(self, webui: Any, page_id: str) -> str:
        if webui:
            return self.client.wiki + ("" if str(webui).startswith("/") else "/") + str(webui)
        return f"{self.client.wiki}/pages/viewpage.action?pageId={page_id}"

    def _page_document(self, ctx: PageContext, data: dict[str, Any]) -> SourceDocument:
        version = data.get("version") or {}
        content = page_html(ctx.node.title, storage_of(data))
        return SourceDocument(
            doc_id=document_id(self.source, PAGE, ctx.node.id),
            source=self.source,
            path=ctx.path,
            uri=self._uri((data.get("_links") or {}).get("webui"), ctx.node.id),
            title=ctx.node.title,
            version=str(version.get("number", "")),
            size=len(content),
            modified_at=parse_time(version.get("createdAt")),
            doc_type="html",
            acl=ctx.acl,
            content=content,
        )

    def _attachment_document(
        self, ctx: PageContext, att: dict[str, Any], *, content: bytes | None
    ) -> SourceDocument:
        title = str(att.get("title") or "")
        version = att.get("version") or {}
        size = att.get("fileSize")
        webui = att.get("webuiLink") or (att.get("_links") or {}).get("webui")
        return SourceDocument(
            doc_id=document_id(self.source, ATTACHMENT, str(att["id"])),
            source=self.source,
            path=attachment_path(ctx.path, title),
            uri=self._uri(webui, ctx.node.id),
            title=title,
            version=str(version.get("number", "")),
            size=len(content) if content is not None else int(size or 0),
            modified_at=parse_time(version.get("createdAt")),
            doc_type=extension(title),
            acl=ctx.acl,
            content=content,
        )

    def _emit_attachment(
        self,
        ctx: PageContext,
        att: dict[str, Any],
        out: _Batch,
        state: SyncState | None,
        *,
        download: bool = True,
    ) -> bool:
        """Download a readable attachment into ``out``; a failure is recorded, never raised.

        ``download=False`` lists it without its bytes: the pipeline fetches it only
        when its version is one the index lacks.
        """
        title = str(att.get("title") or "")
        if extension(title) not in SUPPORTED_TYPES:
            log.debug("confluence %s: skipping attachment of unsupported type", self.source)
            return False
        att_doc = document_id(self.source, ATTACHMENT, str(att.get("id")))
        path = attachment_path(ctx.path, title)
        if not self._in_scope(path):
            out.deleted.append(att_doc)  # outside include/exclude: dropped if it was indexed
            return False
        size = att.get("fileSize")
        if isinstance(size, int) and size > self.scope.max_bytes:
            out.failures.append(
                DocumentFailure(
                    att_doc, path, f"too large: {size} bytes > limit {self.scope.max_bytes}"
                )
            )
            return False
        content: bytes | None = None
        if download:
            link = att.get("downloadLink") or (att.get("_links") or {}).get("download")
            if not link:
                out.failures.append(DocumentFailure(att_doc, path, "no download link"))
                return False
            try:
                content = self.client.download(str(link))
            except NotFound:
                out.deleted.append(att_doc)
                return False
            except ConnectorError as exc:
                out.failures.append(DocumentFailure(att_doc, path, f"download failed: {exc}"))
                return False
        out.documents.append(self._attachment_document(ctx, att, content=content))
        if state is not None:
            version = att.get("version") or {}
            state.remember(
                f"att:{att.get('id')}",
                str(version.get("number", "")),
                parse_time(version.get("createdAt")),
            )
        return True


def _item_time(item: dict[str, Any]) -> datetime | None:
    """When a CQL result was last modified (what ``lastmodified`` compares)."""
    return parse_time((item.get("version") or {}).get("when")) or parse_time(
        ((item.get("history") or {}).get("lastUpdated") or {}).get("when")
    )
