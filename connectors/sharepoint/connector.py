"""SharePoint Online / OneDrive for Business through Microsoft Graph v1.0.

**What is read.** Each configured site (``host:/sites/path``) is resolved to
its document libraries (``GET /sites/{host}:/sites/{path}``, then
``/sites/{id}/drives``); configured drive ids are added as they are. Every
drive is followed with ``driveItem: delta`` from its root.

**Document identity.** ``{source}:{driveId}:{itemId}``: Graph item ids survive
renames and moves, so a rename is an update of the same document (new
``path``/``title``), never a delete plus an add. ``version`` is the item's
``eTag``, which changes on content *and* on rename/move, so the pipeline
refreshes path and title too. ``path`` is ``{drive name}/{folders}/{name}``
(delta carries no ``parentReference.path``: folders are tracked by id as the
delta pages go by, and an unknown parent is looked up once with a plain item
GET, whose ``parentReference.path`` is filled). ``uri`` is the item's
``webUrl``. Content is not inline: :meth:`fetch` downloads it (``/content`` ->
302 -> pre-authenticated URL without the Authorization header).

**Cursor.** ``{"v": 1, "drives": {driveId: link}}``. The link is the drive's
``@odata.deltaLink`` once a drive is caught up; while a drive is being paged,
each batch carries the page's ``@odata.nextLink`` instead, so a failure mid-run
resumes at the next page of that drive (the folders seen before are looked up
again when needed). Drives that are no longer configured drop out of the cursor;
a drive that is new starts with a full enumeration.

**Changes.** One :class:`ChangeBatch` per delta page. ``deleted{}`` items become
``deleted`` ids; an id repeated within a page keeps its last state (across pages
the later batch wins, in order); folders and packages (OneNote) are skipped as
documents; an item renamed or moved out of the ``include``/``exclude`` globs is
reported deleted, and :meth:`fetch` refuses its id with a ``DocumentGone`` (the
pipeline fetches by id to retry a download or restore a lost document).

**410 Gone.** A delta token that expired (``resyncChangesApplyDifferences``…)
means the source must be listed again and what is gone must be deleted. The
connector does not know what the index holds, so the run restarts as a *full
listing* of every configured drive: those batches carry ``cursor=None`` (a crash
during the listing resumes from the old cursor, meets the 410 again and starts
the listing over, never half-pruned), and a final empty batch carries the fresh
delta links with ``complete=True``, so the pipeline deletes every document of
this source the listing did not name.

**Permissions.** Read per item with ``GET /drives/{d}/items/{i}/permissions``
(batched 20 per ``POST /$batch``) and mapped in
:mod:`connectors.sharepoint.permissions`. A permission read that still fails
after the retries is a :class:`DocumentFailure` in :meth:`changes` (the document
is not indexed with a guessed ACL) and an empty ACL in :meth:`list_ids` (fail
closed until the next re-sync). Delta does not report items whose inherited
permissions changed: :meth:`list_ids` returns current ACLs, which the pipeline
re-applies without re-embedding. Permission reads are shared within a run
(:mod:`connectors.sharepoint.shared_reads`): the group sync's walk reads every
item's permissions afresh, and the ingest's listing, downloads and re-sync that
follow reuse those reads for ``shared_permission_reads_s`` instead of reading
each item again.

**Groups.** :meth:`sync_groups` expands every Entra group and site group that
the items' permissions name (found by a :meth:`list_ids` walk unless one ran
on this instance already) plus ``groups`` from the config: Entra groups with
``transitiveMembers`` (nesting flattened), M365 group owners (``{guid}_o``) with
``/owners``, site groups through SharePoint REST, whose login names are mapped as
in :func:`~connectors.sharepoint.permissions.parse_login_name`. Member sets
hold each user's ``{source}:user:{id}`` token and lower-cased mail and UPN; a
site group containing "Everyone except external users" holds the tenant token.
Every member (non-guest) user of the directory gets the tenant token.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import httpx

from connectors import principals
from connectors.base import ChangeBatch, DirectoryUser, DocumentStamp, GroupSnapshot, settings_block
from connectors.common import UnreadableCursor, dump_cursor, load_cursor, parse_iso_time
from connectors.errors import ConnectorError, DocumentGone
from connectors.http import HttpClient
from connectors.models import DocumentFailure, SourceDocument
from connectors.scope import SourceScope
from connectors.sharepoint.auth import TokenProvider, make_token_provider
from connectors.sharepoint.client import DeltaExpired, GraphClient, GraphError, NotFound
from connectors.sharepoint.config import SharePointConfig
from connectors.sharepoint.permissions import (
    GroupRefs,
    PermissionContext,
    map_permissions,
    owners_group_id,
    parse_login_name,
)
from connectors.sharepoint.shared_reads import SHARED_READS, Key
from core.acl import Acl
from core.paths import EXACT_ONLY

log = logging.getLogger(__name__)

DELTA_SELECT = (
    "id,name,webUrl,size,file,folder,deleted,root,eTag,cTag,lastModifiedDateTime,"
    "lastModifiedBy,createdBy,parentReference,sharepointIds,content.downloadUrl"
)
ITEM_SELECT = (
    "id,name,webUrl,size,file,folder,root,eTag,cTag,lastModifiedDateTime,"
    "lastModifiedBy,createdBy,parentReference,sharepointIds"
)
MEMBER_SELECT = "id,mail,userPrincipalName"
CURSOR_VERSION = 1
_MAX_FOLDER_DEPTH = 64


@dataclass(frozen=True)
class Drive:
    """A document library or OneDrive, with the site it belongs to (for site groups)."""

    id: str
    name: str
    web_url: str
    site_id: str | None = None  # site collection id (a GUID)
    site_url: str | None = None


@dataclass(frozen=True)
class _Entry:
    """A file item of a delta page, ready for its permission read."""

    doc_id: str
    path: str
    item: dict[str, Any]


def document_id(source: str, drive_id: str, item_id: str) -> str:
    return f"{source}:{drive_id}:{item_id}"


def parse_document_id(source: str, doc_id: str) -> tuple[str, str]:
    """``(drive id, item id)`` of one of this source's document ids."""
    prefix = f"{source}:"
    parts = doc_id[len(prefix) :].split(":") if doc_id.startswith(prefix) else []
    if len(parts) != 2 or not all(parts):
        raise ConnectorError(f"{doc_id!r} is not a document id of source {source!r}")
    return parts[0], parts[1]


def _parent_path(reference: dict[str, Any]) -> str | None:
    """``/drives/{id}/root:/A/B`` -> ``A/B`` (``""`` at the root); None when absent."""
    path = reference.get("path")
    if not isinstance(path, str) or "root:" not in path:
        return None
    return unquote(path.split("root:", 1)[1]).strip("/")


def _is_folder(item: dict[str, Any]) -> bool:
    return "folder" in item or "root" in item


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _site_collection_id(site_id: str) -> str:
    """Graph site ids are ``host,siteCollectionId,webId``; the middle part names the collection."""
    parts = site_id.split(",")
    return (parts[1] if len(parts) == 3 else site_id).lower()


class SharePointConnector:
    """One ``type: sharepoint`` source: :class:`~connectors.base.Connector` and ``GroupSource``."""

    def __init__(
        self,
        scope: SourceScope,
        settings: SharePointConfig,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        token_provider: TokenProvider | None = None,
    ) -> None:
        self.scope = scope
        self.settings = settings_block(
            settings, SharePointConfig, "sharepoint", "SharePointConnector"
        )
        self.source = scope.name
        self._owns_http = http is None
        client = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0))
        self.http = HttpClient(client, scope.retry, sleep=sleep)
        tokens = token_provider or make_token_provider(self.settings, self.http)
        self.graph = GraphClient(self.http, self.settings.graph_url, tokens, sleep=sleep)
        self._drives: list[Drive] | None = None
        self._drive_by_id: dict[str, Drive] = {}
        self._folders: dict[str, dict[str, str]] = {}  # drive id -> folder id -> relative path
        self._refs = GroupRefs()
        self._walked = False  # a full list_ids walk ran: _refs names every group in use
        self._fresh_reads = False  # the group sync's walk: read afresh, then share

    # -- drives ------------------------------------------------------------------

    def drives(self) -> list[Drive]:
        """The configured sites' document libraries plus the configured drives (cached)."""
        if self._drives is not None:
            return self._drives
        found: dict[str, Drive] = {}
        for site in self.settings.sites:
            host, path = site.split(":/", 1)
            try:
                data = self.graph.get_json(f"/sites/{host.strip()}:/{quote(path.strip('/'))}")
            except NotFound:
                raise ConnectorError(
                    f"source {self.source!r}: site {site} not found (or not visible to the app)"
                ) from None
            site_id = _site_collection_id(str(data["id"]))
            for raw in self.graph.values(
                f"/sites/{data['id']}/drives", {"$select": "id,name,driveType,webUrl"}
            ):
                drive = Drive(
                    id=str(raw["id"]),
                    name=str(raw.get("name") or raw["id"]),
                    web_url=str(raw.get("webUrl") or ""),
                    site_id=site_id,
                    site_url=data.get("webUrl"),
                )
                found.setdefault(drive.id, drive)
        for drive_id in self.settings.drives:
            if drive_id not in found:
                try:
                    found[drive_id] = self._load_drive(drive_id)
                except NotFound:
                    raise ConnectorError(
                        f"source {self.source!r}: drive {drive_id} not found "
                        "(or not visible to the app)"
                    ) from None
        self._drives = list(found.values())
        self._drive_by_id.update(found)
        return self._drives

    def _load_drive(self, drive_id: str) -> Drive:
        data = self.graph.get_json(
            f"/drives/{drive_id}", {"$select": "id,name,driveType,webUrl,sharePointIds"}
        )
        ids = data.get("sharePointIds") or data.get("sharepointIds") or {}
        site_id = ids.get("siteId")
        return Drive(
            id=str(data.get("id") or drive_id),
            name=str(data.get("name") or drive_id),
            web_url=str(data.get("webUrl") or ""),
            site_id=str(site_id).lower() if site_id else None,
            site_url=ids.get("siteUrl"),
        )

    def _drive(self, drive_id: str) -> Drive:
        if drive_id not in self._drive_by_id:
            self._drive_by_id[drive_id] = self._load_drive(drive_id)
        return self._drive_by_id[drive_id]

    # -- cursor ------------------------------------------------------------------

    def _load_cursor(self, cursor: str | None) -> dict[str, str]:
        if not cursor:
            return {}
        try:
            links = load_cursor(cursor, version=CURSOR_VERSION)["drives"]
            if not isinstance(links, dict):
                raise UnreadableCursor("no drives in the cursor")
        except (UnreadableCursor, KeyError):
            raise ConnectorError(
                f"source {self.source!r}: unreadable cursor; reset the source to re-sync it"
            ) from None
        for drive_id, link in links.items():
            if not isinstance(link, str) or not self.graph.owns(link):
                raise ConnectorError(
                    f"source {self.source!r}: the cursor of drive {drive_id} is not a Graph link"
                )
        return dict(links)

    @staticmethod
    def _dump(links: dict[str, str]) -> str:
        return dump_cursor({"drives": links}, version=CURSOR_VERSION)

    # -- delta ---------------------------------------------------------------------

    def _delta_pages(
        self, drive: Drive, link: str | None
    ) -> Iterator[tuple[list[dict[str, Any]], str, bool]]:
        """``(items, next link, caught up)`` per page, from ``link`` or from scratch."""
        if link is None:
            url = f"/drives/{drive.id}/root/delta"
            params: dict[str, Any] | None = {
                "$select": DELTA_SELECT,
                "$top": self.settings.page_size,
            }
        else:
            url, params = link, None
        while True:
            page = self.graph.delta_page(drive.id, url, params)
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            if not next_link and not delta_link:
                raise GraphError(f"delta of drive {drive.id} returned neither next nor delta link")
            yield list(page.get("value") or []), str(delta_link or next_link), bool(delta_link)
            if delta_link:
                return
            url, params = str(next_link), None

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        """Delta since ``cursor`` for every drive; a full listing when a delta token expired."""
        known = self._load_cursor(cursor)
        drives = self.drives()
        links = {d.id: known[d.id] for d in drives if d.id in known}
        try:
            for drive in drives:
                for items, link, _ in self._delta_pages(drive, links.get(drive.id)):
                    files, deleted = self._entries(drive, items)
                    documents, failures = self._documents(drive, files)
                    links[drive.id] = link
                    yield ChangeBatch(documents, failures, deleted, cursor=self._dump(links))
        except DeltaExpired as expired:
            log.warning(
                "source %s: delta token of drive %s expired; listing every drive again",
                self.source,
                expired.drive_id,
            )
            yield from self._relist(drives)

    def _relist(self, drives: list[Drive]) -> Iterator[ChangeBatch]:
        links: dict[str, str] = {}
        for drive in drives:
            self._folders.pop(drive.id, None)
            for items, link, _ in self._delta_pages(drive, None):
                files, _gone = self._entries(drive, items)
                documents, failures = self._documents(drive, files)
                links[drive.id] = link
                if documents or failures:
                    yield ChangeBatch(documents, failures, cursor=None)
        yield ChangeBatch(cursor=self._dump(links), complete=True)

    def _entries(self, drive: Drive, items: list[dict[str, Any]]) -> tuple[list[_Entry], list[str]]:
        """Files (last state per id) and deleted ids of one delta page; folders recorded."""
        page_folders = {
            str(i["id"]): i for i in items if _is_folder(i) and "deleted" not in i and "id" in i
        }
        known = self._folders.setdefault(drive.id, {})
        for folder_id in page_folders:
            path = self._folder_path(drive, folder_id, page_folders)
            if path is not None:
                known[folder_id] = path
        latest: dict[str, dict[str, Any]] = {}
        for item in items:
            item_id = str(item.get("id") or "")
            if not item_id:
                continue
            if "deleted" in item and _is_folder(item):
                known.pop(item_id, None)
                continue
            if _is_folder(item):
                continue
            latest.pop(item_id, None)
            latest[item_id] = item
        files: list[_Entry] = []
        deleted: list[str] = []
        for item_id, item in latest.items():
            doc_id = document_id(self.source, drive.id, item_id)
            if "deleted" in item:
                deleted.append(doc_id)
                continue
            if "file" not in item:
                continue  # packages (OneNote notebooks) and other non-file items
            path = self._item_path(drive, item, page_folders)
            if not self._in_scope(path):
                deleted.append(doc_id)  # excluded now; drop it if it was indexed before
                continue
            files.append(_Entry(doc_id, path, item))
        return files, deleted

    def _in_scope(self, path: str) -> bool:
        """Inside ``include``/``exclude``; Graph paths are the server's own spelling."""
        return self.scope.selects((path,), EXACT_ONLY)

    def _item_path(
        self, drive: Drive, item: dict[str, Any], page_folders: dict[str, dict[str, Any]]
    ) -> str:
        reference = item.get("parentReference") or {}
        parent = _parent_path(reference)
        if parent is None and reference.get("id"):
            parent = self._folder_path(drive, str(reference["id"]), page_folders)
        return _join(drive.name, parent or "", str(item.get("name") or item.get("id")))

    def _folder_path(
        self,
        drive: Drive,
        folder_id: str,
        page_folders: dict[str, dict[str, Any]],
        depth: int = 0,
    ) -> str | None:
        """A folder's path relative to the drive root; None when it cannot be found."""
        known = self._folders.setdefault(drive.id, {})
        folder = page_folders.get(folder_id)  # this page's state wins (a rename or move)
        if folder is None:
            if folder_id in known:
                return known[folder_id]
            try:
                folder = self.graph.get_json(
                    f"/drives/{drive.id}/items/{folder_id}",
                    {"$select": "id,name,root,folder,parentReference"},
                )
            except NotFound:
                return None
        if "root" in folder:
            path: str | None = ""
        else:
            reference = folder.get("parentReference") or {}
            parent = _parent_path(reference)
            if parent is None and reference.get("id") and depth < _MAX_FOLDER_DEPTH:
                parent = self._folder_path(drive, str(reference["id"]), page_folders, depth + 1)
            path = _join(parent or "", str(folder.get("name") or ""))
        known[folder_id] = path or ""
        return path

    # -- permissions and documents -------------------------------------------------

    def _context(self, drive: Drive, item: dict[str, Any]) -> PermissionContext:
        ids = item.get("sharepointIds") or {}
        site_id = ids.get("siteId") or drive.site_id
        return PermissionContext(
            source=self.source,
            tenant_id=self.settings.tenant_id,
            site_id=str(site_id).lower() if site_id else None,
            site_url=ids.get("siteUrl") or drive.site_url,
            anonymous_links=self.settings.anonymous_links,
            organization_links=self.settings.organization_links,
        )

    def _acl(self, drive: Drive, item: dict[str, Any], permissions: Iterable[dict]) -> Acl:
        acl, refs = map_permissions(permissions, self._context(drive, item))
        self._refs.update(refs)
        return acl

    def _shared_key(self, path: str) -> Key:
        return (self.graph.base, self.settings.tenant_id, self.source, path)

    def _shared(self, path: str) -> list[dict[str, Any]] | None:
        if self._fresh_reads:
            return None
        return SHARED_READS.get(self._shared_key(path), self.settings.shared_permission_reads_s)

    def _acls(self, drive: Drive, files: list[_Entry]) -> dict[str, Acl | str]:
        """doc id -> ACL, or the reason its permissions could not be read."""
        paths = {e.doc_id: f"/drives/{drive.id}/items/{e.item['id']}/permissions" for e in files}
        result: dict[str, Acl | str] = {}
        unread: list[_Entry] = []
        for entry in files:
            shared = self._shared(paths[entry.doc_id])
            if shared is None:
                unread.append(entry)
            else:
                result[entry.doc_id] = self._acl(drive, entry.item, shared)
        if not unread:
            return result
        answers = self.graph.get_many(
            [paths[e.doc_id] for e in unread], self.settings.permission_batch_size
        )
        for entry in unread:
            answer = answers.get(paths[entry.doc_id])
            if answer is None or answer.status != 200:
                status = answer.status if answer else 0
                result[entry.doc_id] = (
                    "item not found when reading its permissions (404)"
                    if status == 404
                    else f"permissions could not be read (status {status})"
                )
                continue
            permissions = list(answer.body.get("value") or [])
            next_link = answer.body.get("@odata.nextLink")
            try:
                if next_link:
                    permissions.extend(self.graph.values(str(next_link)))
            except ConnectorError as exc:
                result[entry.doc_id] = f"permissions could not be read ({exc})"
                continue
            SHARED_READS.put(self._shared_key(paths[entry.doc_id]), permissions)
            result[entry.doc_id] = self._acl(drive, entry.item, permissions)
        return result

    def _document(self, drive: Drive, entry: _Entry, acl: Acl) -> SourceDocument:
        item = entry.item
        name = str(item.get("name") or item.get("id"))
        created = (item.get("createdBy") or {}).get("user") or {}
        return SourceDocument(
            doc_id=entry.doc_id,
            source=self.source,
            path=entry.path,
            uri=str(item.get("webUrl") or ""),
            title=PurePosixPath(name).stem or name,
            version=str(item.get("eTag") or item.get("cTag") or item.get("lastModifiedDateTime")),
            size=int(item.get("size") or 0),
            modified_at=parse_iso_time(item.get("lastModifiedDateTime")),
            doc_type=PurePosixPath(name).suffix.lower().lstrip("."),
            acl=acl,
            author=created.get("email") or created.get("displayName"),
        )

    def _documents(
        self, drive: Drive, files: list[_Entry]
    ) -> tuple[list[SourceDocument], list[DocumentFailure]]:
        if not files:
            return [], []
        acls = self._acls(drive, files)
        documents: list[SourceDocument] = []
        failures: list[DocumentFailure] = []
        for entry in files:
            acl = acls[entry.doc_id]
            if isinstance(acl, str):
                failures.append(DocumentFailure(entry.doc_id, entry.path, acl))
            else:
                documents.append(self._document(drive, entry, acl))
        return documents, failures

    # -- the slim listing and single fetch -----------------------------------------------

    def list_ids(self) -> Iterator[DocumentStamp]:
        """Every file now, with its current ACL (a fresh enumeration of every drive)."""
        for drive in self.drives():
            for items, _link, _done in self._delta_pages(drive, None):
                files, _gone = self._entries(drive, items)
                if not files:
                    continue
                acls = self._acls(drive, files)
                for entry in files:
                    acl = acls[entry.doc_id]
                    if isinstance(acl, str):
                        log.warning(
                            "source %s: %s: %s; ACL left empty", self.source, entry.doc_id, acl
                        )
                        acl = Acl.empty()
                    doc = self._document(drive, entry, acl)
                    yield DocumentStamp(doc.doc_id, doc.version, acl, doc.path)
        self._walked = True

    def fetch(self, doc_id: str) -> SourceDocument:
        """One document with its bytes and current ACL.

        :raises NotFound: the item is gone, or is not a file.
        :raises DocumentGone: its path is outside the source's ``include``/``exclude``
            (read from the item's metadata; no permission read, no download).
        """
        drive_id, item_id = parse_document_id(self.source, doc_id)
        try:
            drive = self._drive(drive_id)
            item = self.graph.get_json(
                f"/drives/{drive_id}/items/{item_id}", {"$select": ITEM_SELECT}
            )
            if "file" not in item or "deleted" in item:
                raise NotFound(f"{doc_id} is not a file", 404)
            path = self._item_path(drive, item, {})
            if not self._in_scope(path):
                # The listing's rule: an id from before an `exclude` was added never comes back.
                raise DocumentGone(
                    f"{doc_id!r} ({path}) is outside the include/exclude globs "
                    f"of source {self.source!r}"
                )
            where = f"/drives/{drive_id}/items/{item_id}/permissions"
            permissions = self._shared(where)
            if permissions is None:
                permissions = list(self.graph.values(where))
                SHARED_READS.put(self._shared_key(where), permissions)
            acl = self._acl(drive, item, permissions)
            content = self.graph.download(drive_id, item_id)
        except GraphError as exc:
            raise type(exc)(f"source {self.source!r}: {doc_id}: {exc}", exc.status) from None
        document = self._document(drive, _Entry(doc_id, path, item), acl)
        return dataclasses.replace(document, content=content, size=len(content))

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    # -- groups --------------------------------------------------------------------

    def sync_groups(self) -> GroupSnapshot:
        """Memberships of every group the items' permissions name (nesting flattened)."""
        if not self._walked:
            # The walk reads every item's permissions afresh and shares them with the
            # ingest that follows in this run (one permission read per item per run).
            self._fresh_reads = True
            try:
                for _ in self.list_ids():
                    pass
            finally:
                self._fresh_reads = False
        users, by_identity = self._directory_users()
        tenant = principals.tenant_token(self.source, self.settings.tenant_id)
        expanded: dict[str, frozenset[str]] = {}

        def group(group_id: str, owners: bool = False) -> frozenset[str]:
            key = owners_group_id(group_id) if owners else group_id.lower()
            if key not in expanded:
                relation = "owners" if owners else "transitiveMembers"
                expanded[key] = self._members(f"/groups/{group_id}/{relation}")
            return expanded[key]

        members: dict[str, frozenset[str]] = {}
        for group_id in sorted(self._refs.groups | {g.lower() for g in self.settings.groups}):
            members[principals.group_token(self.source, group_id)] = group(group_id)
        for group_id in sorted(self._refs.owners):
            token = principals.group_token(self.source, owners_group_id(group_id))
            members[token] = group(group_id, owners=True)
        if self.settings.site_groups:
            for (site_id, number), site_url in sorted(self._refs.site_groups.items()):
                token = principals.site_group_token(self.source, site_id, number)
                members[token] = self._site_group(site_url, number, by_identity, tenant, group)
        return GroupSnapshot(self.source, members, users, tenant_token=tenant)

    def _directory_users(self) -> tuple[list[DirectoryUser], dict[str, str]]:
        users: list[DirectoryUser] = []
        by_identity: dict[str, str] = {}
        params = {"$select": MEMBER_SELECT + ",userType", "$top": 999}
        for raw in self.graph.values("/users", params):
            identities = _identities(raw)
            if not raw.get("id") or not identities:
                continue
            token = principals.user_token(self.source, str(raw["id"]))
            for identity in identities:
                by_identity[identity] = token
            # Guests are not "people in your organisation": no tenant token for them.
            if _is_guest(raw):
                continue
            users.append(DirectoryUser(token=token, identities=identities))
        return users, by_identity

    def _members(self, path: str) -> frozenset[str]:
        tokens: set[str] = set()
        try:
            for raw in self.graph.values(path, {"$select": MEMBER_SELECT}):
                kind = str(raw.get("@odata.type") or "#microsoft.graph.user")
                if kind != "#microsoft.graph.user" or not raw.get("id"):
                    continue  # nested groups are already flattened; devices, apps never read
                tokens.add(principals.user_token(self.source, str(raw["id"])))
                tokens |= _identities(raw)
        except NotFound:
            log.info("source %s: %s no longer exists; no members", self.source, path)
        return frozenset(tokens)

    def _site_group(
        self,
        site_url: str,
        number: str,
        by_identity: dict[str, str],
        tenant: str,
        group: Callable[..., frozenset[str]],
    ) -> frozenset[str]:
        tokens: set[str] = set()
        try:
            entries = self.graph.site_group_users(site_url, number)
        except NotFound:
            return frozenset()
        for entry in entries:
            who = parse_login_name(str(entry.get("LoginName") or ""))
            if who.kind == "user":
                for identity in {who.value, str(entry.get("Email") or "").strip().lower()}:
                    if identity:
                        tokens.add(identity)
                        if identity in by_identity:
                            tokens.add(by_identity[identity])
            elif who.kind == "group":
                tokens |= group(who.value)
            elif who.kind == "owners":
                tokens |= group(who.value, owners=True)
            elif who.kind == "tenant":
                tokens.add(tenant)
            else:
                log.debug(
                    "source %s: site group %s: login %r ignored", self.source, number, who.value
                )
        return frozenset(tokens)


def _identities(raw: dict[str, Any]) -> frozenset[str]:
    values = (raw.get("mail"), raw.get("userPrincipalName"))
    return frozenset(principals.email(str(v)) for v in values if v and str(v).strip())


def _is_guest(raw: dict[str, Any]) -> bool:
    if raw.get("userType"):
        return str(raw["userType"]).lower() == "guest"
    return "#ext#" in str(raw.get("userPrincipalName") or "").lower()
