"""A stateful fake of Entra ID token issuance, Microsoft Graph v1.0 and SharePoint REST.

One real HTTP server on loopback (pytest-httpserver) plays three hosts, told
apart by the URL host so that tokens are scoped like the real thing:

* ``http://127.0.0.1:{port}`` — Graph (``/v1.0/...``) and the token endpoint
  ``POST /{tenant}/oauth2/v2.0/token`` (client-credentials grant);
* ``http://localhost:{port}`` — the SharePoint host: site web URLs, site-group
  REST (``/sites/{path}/_api/web/sitegroups/getbyid(n)/users``) and the
  pre-authenticated download URLs that ``/content`` redirects to.

A Graph call needs a token issued for ``http://127.0.0.1:{port}/.default``, a
SharePoint REST call one for ``http://localhost:{port}/.default``; a download
URL refuses any Authorization header.

The model is mutable (sites, drives, folders and files with bytes, per-item
permissions in Graph's shape, users, Entra groups with nesting and owners,
site groups) and every mutation is logged with a sequence number, which is what
delta tokens encode. Requests are recorded in :attr:`FakeSharePoint.requests`
(batch sub-requests too, marked ``inner``), so tests assert what was sent.

Requests are checked as Graph checks them: a path Graph does not serve is a
400 ``BadRequest`` ("Resource not found for the segment ..."), and a query
option the endpoint's reference page does not list is a 400 too, both in
Graph's error shape ``{"error": {"code", "message", "innerError"}}``
(learn.microsoft.com/graph/errors). The option lists and payloads follow the
Graph v1.0 reference pages named in :data:`GRAPH_ROUTES` and in
``payloads/SOURCES.md``.

Use::

    fake = FakeSharePoint(); fake.start(); fake.seed()
    source = make_source_config(fake, "sp", tmp_path)   # the trove.yaml block
    ...
    fake.stop()
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TENANT_ID = "7c9d2b1e-4f3a-4e8b-9a61-2d5c8e0f1a34"
CLIENT_ID = "3f2a9c61-8b7d-4e52-a1c0-6d9e4b2f7a18"
CLIENT_SECRET = "fake~Secret.Q8v_2kLmN0pRsTuVwXyZ"
GRAPH_HOST = "contoso.sharepoint.com"  # the host named in `sites:` entries

PAYLOADS = Path(__file__).parent / "payloads"

# Entra ids of the seeded directory (stable so tests can name them).
ALICE = "a1a1a1a1-0000-4000-8000-000000000001"
BOB = "b2b2b2b2-0000-4000-8000-000000000002"
CAROL = "c3c3c3c3-0000-4000-8000-000000000003"
DAVE = "d4d4d4d4-0000-4000-8000-000000000004"  # a guest
ERIN = "e5e5e5e5-0000-4000-8000-000000000005"
ENGINEERING = "0e0e0e0e-1111-4111-8111-000000000010"  # M365 group behind the eng site
SECURITY = "5ec5ec00-2222-4222-8222-000000000020"  # security group, nests CORE
CORE = "c0e0c0e0-3333-4333-8333-000000000030"


def payload(name: str) -> Any:
    """A recorded-shape JSON payload from ``payloads/``."""
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


# Graph v1.0 endpoints the fake serves, with the OData query options each page
# documents ("Optional query parameters"). Anything else is answered 400.
_ODATA_LIST = frozenset({"$select", "$top", "$skiptoken", "$expand", "$filter", "$orderby"})
GRAPH_ROUTES: list[tuple[str, frozenset[str], str]] = [
    # (path regex, allowed query options, reference page)
    (r"/sites/[^/:]+:/sites/[^:]+:?", frozenset({"$select", "$expand"}), "site-getbypath"),
    (r"/sites/[^/]+/drives", frozenset({"$select", "$expand", "$top", "$orderby"}), "drive-list"),
    (r"/drives/[^/]+", frozenset({"$select", "$expand"}), "drive-get"),
    (
        r"/drives/[^/]+/root/delta",
        frozenset({"$select", "$expand", "$top", "token", "$skiptoken"}),
        "driveitem-delta",
    ),
    (r"/drives/[^/]+/items/[^/]+", frozenset({"$select", "$expand"}), "driveitem-get"),
    (
        r"/drives/[^/]+/items/[^/]+/permissions",
        frozenset({"$select", "$top", "$skiptoken"}),
        "driveitem-list-permissions",
    ),
    (r"/drives/[^/]+/items/[^/]+/content", frozenset({"format"}), "driveitem-get-content"),
    (
        r"/groups/[^/]+/(transitiveMembers|owners|members)",
        _ODATA_LIST | {"$count", "$search"},
        "group-list-transitivemembers / group-list-owners",
    ),
    (r"/users", _ODATA_LIST | {"$count", "$search"}, "user-list"),
]


def graph_route(path: str, query: Iterable[str]) -> tuple[int, dict[str, Any]] | None:
    """``None`` when Graph serves ``path`` with these options, else its 400 answer."""
    for pattern, allowed, _page in GRAPH_ROUTES:
        if re.fullmatch(pattern, path):
            unknown = sorted(set(query) - allowed)
            if unknown:
                return 400, _error(
                    "BadRequest", f"Query option '{unknown[0]}' is not allowed for {path}."
                )
            return None
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    return 400, _error("BadRequest", f"Resource not found for the segment '{segment}'.")


# -- builders for Graph permission and SharePoint member shapes ---------------------


def perm_user(
    email: str, user_id: str, roles: Iterable[str] = ("read",), upn: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"aTowIy5mfG1lbWJlcnNoaXB8{user_id[:8]}",
        "roles": list(roles),
        "grantedToV2": {
            "user": {"id": user_id, "displayName": email.split("@")[0].title(), "email": email},
            "siteUser": {
                "id": "11",
                "displayName": email.split("@")[0].title(),
                "email": email,
                "loginName": f"i:0#.f|membership|{upn or email}",
            },
        },
        "inheritedFrom": {},
    }


def perm_group(group_id: str, roles: Iterable[str] = ("read",)) -> dict[str, Any]:
    return {
        "id": f"c3BncnA{group_id[:8]}",
        "roles": list(roles),
        "grantedToV2": {"group": {"id": group_id, "displayName": "Group"}},
        "inheritedFrom": {},
    }


def perm_site_group(number: int, name: str, roles: Iterable[str] = ("read",)) -> dict[str, Any]:
    return {
        "id": str(number),
        "roles": list(roles),
        "grantedToV2": {"siteGroup": {"id": str(number), "displayName": name, "loginName": name}},
        "inheritedFrom": {},
    }


def perm_link(
    scope: str,
    roles: Iterable[str] = ("read",),
    grantees: Iterable[dict] = (),
    expires: str | None = None,
) -> dict[str, Any]:
    """A sharing-link permission (Graph v1.0 "permission resource type" and "sharingLink
    resource type"); ``grantees`` are the people who redeemed it (grantedToIdentitiesV2)."""
    perm: dict[str, Any] = {
        "id": f"link-{scope}-{secrets.token_hex(3)}",
        "roles": list(roles),
        "link": {
            "scope": scope,
            "type": "view" if "read" in roles else "edit",
            "webUrl": f"https://{GRAPH_HOST}/:w:/s/eng/{secrets.token_urlsafe(12)}",
            "preventsDownload": False,
        },
        "hasPassword": False,
        "grantedToIdentitiesV2": list(grantees),
    }
    if expires is not None:
        perm["expirationDateTime"] = expires
    return perm


def identity_user(email: str, user_id: str) -> dict[str, Any]:
    return {"user": {"id": user_id, "displayName": email.split("@")[0].title(), "email": email}}


def sp_user(upn: str, email: str | None = None, number: int = 10) -> dict[str, Any]:
    return {
        "Id": number,
        "LoginName": f"i:0#.f|membership|{upn}",
        "Title": upn.split("@")[0].title(),
        "Email": email if email is not None else upn,
        "PrincipalType": 1,
    }


def sp_m365_group(group_id: str, owners: bool = False) -> dict[str, Any]:
    suffix = "_o" if owners else ""
    return {
        "Id": 20 if owners else 21,
        "LoginName": f"c:0o.c|federateddirectoryclaimprovider|{group_id}{suffix}",
        "Title": "Engineering Owners" if owners else "Engineering Members",
        "Email": "",
        "PrincipalType": 4,
    }


def sp_security_group(group_id: str) -> dict[str, Any]:
    return {
        "Id": 22,
        "LoginName": f"c:0t.c|tenant|{group_id}",
        "Title": "Security",
        "Email": "",
        "PrincipalType": 4,
    }


def sp_everyone_except_external(tenant_id: str = TENANT_ID) -> dict[str, Any]:
    return {
        "Id": 23,
        "LoginName": f"c:0-.f|rolemanager|spo-grid-all-users/{tenant_id}",
        "Title": "Everyone except external users",
        "Email": "",
        "PrincipalType": 4,
    }


# -- the model -----------------------------------------------------------------------


@dataclass
class FakeItem:
    id: str
    drive_id: str
    name: str
    parent_id: str | None
    folder: bool = False
    root: bool = False
    content: bytes = b""
    guid: str = ""
    version: int = 1  # eTag counter (content and metadata)
    content_version: int = 1  # cTag counter (content only)
    modified: datetime = field(default_factory=lambda: datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    permissions: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    author: str = "alice@contoso.com"


@dataclass
class FakeDrive:
    id: str
    name: str
    web_url: str
    site: FakeSite | None
    root_id: str
    drive_type: str = "documentLibrary"


@dataclass
class FakeSite:
    path: str  # "eng" in /sites/eng
    collection_id: str
    web_id: str
    display_name: str
    web_url: str
    drives: list[str] = field(default_factory=list)
    site_groups: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{GRAPH_HOST},{self.collection_id},{self.web_id}"


@dataclass
class FakeRequest:
    """What the fake received (``inner`` for a ``$batch`` sub-request)."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    inner: bool = False

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Enumeration:
    generation: int
    entries: list[dict[str, Any]]
    end_seq: int
    top: int


class FakeSharePoint:
    """Entra token endpoint + Graph + SharePoint REST over one loopback server."""

    def __init__(self, tenant_id: str = TENANT_ID, server: HTTPServer | None = None) -> None:
        """A fresh model; ``server`` reuses a running HTTPServer (tests share one per session)."""
        self.tenant_id = tenant_id
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self._owns_server = server is None
        self.server = server or HTTPServer(host="127.0.0.1", port=0)
        self.requests: list[FakeRequest] = []
        self.sites: dict[str, FakeSite] = {}
        self.drives: dict[str, FakeDrive] = {}
        self.items: dict[str, FakeItem] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.member_page_size = 2  # so member and user listings page
        self._lock = threading.RLock()
        self._seq = 0
        self._log: dict[str, list[tuple[int, dict[str, Any]]]] = {}  # drive -> (seq, snapshot)
        self._generation = 1
        self._enumerations: dict[str, _Enumeration] = {}
        self._tokens: dict[str, str] = {}  # access token -> scope
        self._downloads: dict[str, str] = {}  # tempauth -> item id
        self._throttle: list[str] = []  # Retry-After values for the next requests
        self._queued: dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] = {}
        self._counter = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeSharePoint:
        self.server.clear()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        if not self.server.is_running():
            self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server (or, when it is shared, just unhook this fake from it)."""
        if not self._owns_server:
            self.server.clear()
        elif self.server.is_running():
            self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """The Graph / token host."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    @property
    def sharepoint_url(self) -> str:
        """The SharePoint host (site web URLs, REST, downloads)."""
        return f"http://localhost:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def graph_scope(self) -> str:
        return f"{self.url}/.default"

    @property
    def sharepoint_scope(self) -> str:
        return f"{self.sharepoint_url}/.default"

    def token_provider(self, scope: str) -> str:
        """An injectable token provider: issues a fake token for ``scope`` without HTTP."""
        with self._lock:
            token = f"fake-at-{next(self._counter)}-{secrets.token_hex(4)}"
            self._tokens[token] = scope
            return token

    # -- building the model ------------------------------------------------------------

    def _id(self, kind: str, *parts: str) -> str:
        digest = hashlib.sha1("/".join((kind, *parts)).encode()).hexdigest().upper()
        return f"01{digest[:32]}"

    def add_site(self, path: str, display_name: str | None = None) -> FakeSite:
        with self._lock:
            site = FakeSite(
                path=path,
                collection_id=_uuid(f"site-{path}"),
                web_id=_uuid(f"web-{path}"),
                display_name=display_name or path.title(),
                web_url=f"{self.sharepoint_url}/sites/{path}",
            )
            self.sites[path] = site
            return site

    def add_drive(self, name: str, site: FakeSite | str | None = None) -> FakeDrive:
        with self._lock:
            if isinstance(site, str):
                site = self.sites[site]
            drive_id = (
                "b!" + hashlib.sha1(f"drive/{name}/{site and site.path}".encode()).hexdigest()
            )
            web = (
                f"{site.web_url}/{quote('Shared Documents' if name == 'Documents' else name)}"
                if site
                else f"{self.sharepoint_url}/personal/{quote(name)}/Documents"
            )
            root = FakeItem(
                self._id("root", drive_id),
                drive_id,
                "root",
                None,
                folder=True,
                root=True,
                guid=_uuid(f"root-{drive_id}"),
            )
            drive = FakeDrive(
                drive_id,
                name,
                web,
                site,
                root.id,
                drive_type="documentLibrary" if site else "business",
            )
            self.drives[drive_id] = drive
            self.items[root.id] = root
            self._log[drive_id] = []
            if site:
                site.drives.append(drive_id)
            self._changed(root)
            return drive

    def _changed(self, item: FakeItem) -> None:
        self._seq += 1
        self._log[item.drive_id].append((self._seq, self._item_json(item, delta=True)))

    def _child(self, drive: FakeDrive, parent_id: str, name: str) -> FakeItem | None:
        for item in self.items.values():
            if (
                item.drive_id == drive.id
                and item.parent_id == parent_id
                and item.name == name
                and not item.deleted
            ):
                return item
        return None

    def _ensure_folder(self, drive: FakeDrive, folder_path: str) -> str:
        parent = drive.root_id
        for part in [p for p in folder_path.split("/") if p]:
            existing = self._child(drive, parent, part)
            if existing is None:
                existing = FakeItem(
                    self._id("item", drive.id, str(next(self._counter))),
                    drive.id,
                    part,
                    parent,
                    folder=True,
                    guid=_uuid(f"f-{next(self._counter)}"),
                )
                self.items[existing.id] = existing
                self._changed(existing)
            parent = existing.id
        return parent

    def add_folder(self, drive: FakeDrive | str, path: str) -> str:
        with self._lock:
            drive = self._drive(drive)
            return self._ensure_folder(drive, path)

    def add_file(
        self,
        drive: FakeDrive | str,
        path: str,
        content: bytes | str,
        permissions: list[dict[str, Any]] | None = None,
        author: str = "alice@contoso.com",
    ) -> str:
        """Create ``path`` (folders as needed) and return the new item's id."""
        with self._lock:
            drive = self._drive(drive)
            folder, _, name = path.rpartition("/")
            parent = self._ensure_folder(drive, folder)
            item = FakeItem(
                self._id("item", drive.id, str(next(self._counter))),
                drive.id,
                name,
                parent,
                content=content.encode() if isinstance(content, str) else content,
                guid=_uuid(f"i-{next(self._counter)}"),
                permissions=list(permissions)
                if permissions is not None
                else self.default_permissions(drive),
                author=author,
                modified=self._now(),
            )
            self.items[item.id] = item
            self._changed(item)
            return item.id

    def default_permissions(self, drive: FakeDrive) -> list[dict[str, Any]]:
        """A library's inherited grants: its site's Owners/Members/Visitors groups."""
        if drive.site is None:
            return [perm_user("alice@contoso.com", ALICE, ["owner"])]
        return [
            perm_site_group(3, f"{drive.site.display_name} Owners", ["owner"]),
            perm_site_group(5, f"{drive.site.display_name} Members", ["write"]),
            perm_site_group(4, f"{drive.site.display_name} Visitors", ["read"]),
        ]

    def edit_file(self, item_id: str, content: bytes | str) -> None:
        with self._lock:
            item = self.items[item_id]
            item.content = content.encode() if isinstance(content, str) else content
            item.version += 1
            item.content_version += 1
            item.modified = self._now()
            self._changed(item)

    def rename_file(self, item_id: str, new_name: str, new_folder: str | None = None) -> None:
        """Rename (and optionally move to ``new_folder``, relative to the drive root)."""
        with self._lock:
            item = self.items[item_id]
            item.name = new_name
            if new_folder is not None:
                item.parent_id = self._ensure_folder(self.drives[item.drive_id], new_folder)
            item.version += 1
            item.modified = self._now()
            self._changed(item)

    def delete_file(self, item_id: str) -> None:
        with self._lock:
            item = self.items[item_id]
            item.deleted = True
            self._changed(item)

    def set_permissions(self, item_id: str, permissions: list[dict[str, Any]]) -> None:
        """Change an item's permissions. Like Graph, this does not show up in delta."""
        with self._lock:
            self.items[item_id].permissions = list(permissions)

    def add_user(self, user_id: str, upn: str, mail: str | None = "", guest: bool = False) -> None:
        with self._lock:
            self.users[user_id] = {
                "id": user_id,
                "displayName": upn.split("@")[0].split("_")[0].title(),
                "mail": upn if mail == "" else mail,
                "userPrincipalName": upn,
                "userType": "Guest" if guest else "Member",
            }

    def add_group(
        self, group_id: str, name: str, members: Iterable[str] = (), owners: Iterable[str] = ()
    ) -> None:
        with self._lock:
            self.groups[group_id] = {
                "id": group_id,
                "displayName": name,
                "mail": f"{name.lower().replace(' ', '-')}@contoso.com",
                "members": list(members),
                "owners": list(owners),
            }

    def set_group_members(self, group_id: str, members: Iterable[str]) -> None:
        with self._lock:
            self.groups[group_id]["members"] = list(members)

    def set_group_owners(self, group_id: str, owners: Iterable[str]) -> None:
        with self._lock:
            self.groups[group_id]["owners"] = list(owners)

    def remove_group(self, group_id: str) -> None:
        with self._lock:
            del self.groups[group_id]

    def set_site_group(self, site: FakeSite | str, number: int, members: list[dict]) -> None:
        with self._lock:
            site = self.sites[site] if isinstance(site, str) else site
            site.site_groups[number] = list(members)

    # -- fault injection ---------------------------------------------------------------

    def throttle_next(self, n: int = 1, retry_after: str | int = "2") -> None:
        """Answer the next ``n`` Graph / SharePoint requests with 429 and this Retry-After."""
        with self._lock:
            self._throttle.extend([str(retry_after)] * n)

    def queue_response(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests for ``path`` (no query; batch sub-requests too)."""
        with self._lock:
            queue = self._queued.setdefault((method.upper(), path), [])
            queue.extend([(status, dict(headers or {}), body)] * times)

    def clear_faults(self) -> None:
        """Drop pending throttles and queued responses."""
        with self._lock:
            self._throttle.clear()
            self._queued.clear()

    def expire_delta_links(self) -> None:
        """Make every delta and next link issued so far answer 410 Gone."""
        with self._lock:
            self._generation += 1

    # -- seeding -----------------------------------------------------------------------

    def seed(self) -> dict[str, str]:
        """A small tenant: users, nested groups, the eng site (site groups) and four files.

        Returns names -> ids: ``design``, ``api``, ``handbook``, ``secret`` (items),
        ``drive`` and ``site``.
        """
        self.add_user(ALICE, "alice@contoso.com")
        self.add_user(BOB, "bob@contoso.com", mail="robert@contoso.com")
        self.add_user(CAROL, "carol@contoso.com")
        self.add_user(
            DAVE,
            "dave_fabrikam.com#EXT#@contoso.onmicrosoft.com",
            mail="dave@fabrikam.com",
            guest=True,
        )
        self.add_user(ERIN, "erin@contoso.com")
        self.add_group(ENGINEERING, "Engineering", members=[ALICE, BOB], owners=[ALICE])
        self.add_group(CORE, "Core", members=[CAROL])
        self.add_group(SECURITY, "Security", members=[BOB, CORE])
        site = self.add_site("eng", "Engineering")
        self.set_site_group(site, 3, [sp_m365_group(ENGINEERING, owners=True)])
        self.set_site_group(site, 5, [sp_m365_group(ENGINEERING)])
        self.set_site_group(
            site, 4, [sp_everyone_except_external(self.tenant_id), sp_user("carol@contoso.com")]
        )
        drive = self.add_drive("Documents", site)
        ids = {"drive": drive.id, "site": site.id}
        ids["design"] = self.add_file(
            drive,
            "Specs/design.md",
            "# Design\n\nThe ingestion service shards documents by tenant.\n",
        )
        ids["api"] = self.add_file(
            drive,
            "Specs/api.txt",
            "The search API accepts a query and returns cited passages.\n",
            permissions=[
                perm_user("alice@contoso.com", ALICE, ["write"]),
                perm_group(SECURITY, ["read"]),
            ],
        )
        ids["handbook"] = self.add_file(
            drive,
            "Public/handbook.html",
            "<html><body><h1>Handbook</h1><p>Welcome to Contoso.</p></body></html>",
            permissions=[*self.default_permissions(drive), perm_link("organization")],
        )
        ids["secret"] = self.add_file(
            drive,
            "Restricted/salaries.txt",
            "Salary bands are confidential.\n",
            permissions=[perm_user("robert@contoso.com", BOB, ["owner"], upn="bob@contoso.com")],
        )
        return ids

    # -- serving -------------------------------------------------------------------------

    def _drive(self, drive: FakeDrive | str) -> FakeDrive:
        return self.drives[drive] if isinstance(drive, str) else drive

    def _now(self) -> datetime:
        return datetime(2026, 11, 20, 9, 0, tzinfo=UTC) + timedelta(minutes=self._seq)

    def _handle(self, request: Request) -> Response:
        host = (request.host or "").split(":")[0]
        req = FakeRequest(
            method=request.method,
            host=host,
            path=request.path,
            query={k: v for k, v in request.args.items()},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.get_data(),
        )
        with self._lock:
            self.requests.append(req)
            is_token = req.method == "POST" and req.path.endswith("/oauth2/v2.0/token")
            if self._throttle and not is_token:
                retry_after = self._throttle.pop(0)
                return _json(
                    429,
                    {"error": {"code": "TooManyRequests", "message": "Please retry later."}},
                    {"Retry-After": retry_after},
                )
            status, headers, body = self._route(req)
        if isinstance(body, bytes):
            return Response(body, status=status, headers=headers)
        return _json(status, body, headers)

    def _route(self, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        queued = self._queued.get((req.method, req.path))
        if queued:
            return queued.pop(0)
        if req.method == "POST" and req.path == f"/{self.tenant_id}/oauth2/v2.0/token":
            return self._token(req)
        if req.host == "localhost":
            return self._sharepoint(req)
        if not req.path.startswith("/v1.0/"):
            return 404, {}, _error("itemNotFound", "No such route.")
        scope = self._tokens.get((req.authorization or "").removeprefix("Bearer ").strip())
        if scope != self.graph_scope:
            return (
                401,
                {},
                _error("InvalidAuthenticationToken", "Access token is empty or invalid."),
            )
        path = req.path[len("/v1.0") :]
        if req.method == "POST" and path == "/$batch":
            return self._batch(req)
        if req.method != "GET":
            return 405, {}, _error("methodNotAllowed", "Not allowed.")
        return self._graph_get(path, req)

    def _token(self, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        form = dict(_parse_form(req.body))
        if form.get("grant_type") != "client_credentials":
            return 400, {}, {"error": "unsupported_grant_type"}
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return (
                401,
                {},
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. "
                    "Ensure the secret being sent in the request is the client secret value.",
                    "error_codes": [7000215],
                },
            )
        scope = form.get("scope", "")
        if scope not in (self.graph_scope, self.sharepoint_scope):
            return 400, {}, {"error": "invalid_scope", "error_description": "AADSTS70011"}
        token = self.token_provider(scope)
        return (
            200,
            {},
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
        )

    def _batch(self, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        body = json.loads(req.body or b"{}")
        requests = body.get("requests") or []
        if len(requests) > 20:
            return 400, {}, _error("BadRequest", "A batch may hold at most 20 requests.")
        responses = []
        for sub in requests:
            url = str(sub.get("url") or "")
            path, _, query = url.partition("?")
            inner = FakeRequest(
                method=str(sub.get("method") or "GET").upper(),
                host=req.host,
                path="/v1.0" + path,
                query=dict(_parse_form(query.encode())),
                headers=req.headers,
                inner=True,
            )
            self.requests.append(inner)
            queued = self._queued.get((inner.method, inner.path))
            if queued:
                status, headers, payload_ = queued.pop(0)
            else:
                status, headers, payload_ = self._graph_get(path, inner)
            responses.append(
                {
                    "id": sub.get("id"),
                    "status": status,
                    "headers": {"Content-Type": "application/json", **headers},
                    "body": payload_,
                }
            )
        return 200, {}, {"responses": responses}

    def _graph_get(self, path: str, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        refused = graph_route(path, req.query)
        if refused is not None:
            return refused[0], {}, refused[1]
        return self._graph_get_routed(path, req)

    def _graph_get_routed(self, path: str, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/sites/([^/:]+):/sites/([^:]+):?", path)
        if m:
            site = self.sites.get(m.group(2).strip("/"))
            if site is None or m.group(1) != GRAPH_HOST:
                return 404, {}, _error("itemNotFound", "Requested site could not be found")
            return 200, {}, self._site_json(site)
        m = re.fullmatch(r"/sites/([^/]+)/drives", path)
        if m:
            site = next((s for s in self.sites.values() if s.id == m.group(1)), None)
            if site is None:
                return 404, {}, _error("itemNotFound", "Requested site could not be found")
            drives = [self._drive_json(self.drives[d]) for d in site.drives]
            return (
                200,
                {},
                {"@odata.context": f"{self.graph_url}/$metadata#drives", "value": drives},
            )
        m = re.fullmatch(r"/drives/([^/]+)", path)
        if m:
            drive = self.drives.get(m.group(1))
            if drive is None:
                return 404, {}, _error("itemNotFound", "The drive cannot be found.")
            return 200, {}, self._drive_json(drive, with_ids=True)
        m = re.fullmatch(r"/drives/([^/]+)/root/delta", path)
        if m:
            return self._delta(m.group(1), req)
        m = re.fullmatch(r"/drives/([^/]+)/items/([^/]+)(/permissions|/content)?", path)
        if m:
            item = self.items.get(m.group(2))
            if item is None or item.deleted or item.drive_id != m.group(1):
                return 404, {}, _error("itemNotFound", "The resource could not be found.")
            if m.group(3) == "/permissions":
                return (
                    200,
                    {},
                    {
                        "@odata.context": f"{self.graph_url}/$metadata#drives('{item.drive_id}')"
                        f"/items('{item.id}')/permissions",
                        "value": item.permissions,
                    },
                )
            if m.group(3) == "/content":
                tempauth = secrets.token_urlsafe(24)
                self._downloads[tempauth] = item.id
                location = f"{self.sharepoint_url}/_layouts/15/download.aspx?" + urlencode(
                    {"UniqueId": item.guid, "tempauth": tempauth}
                )
                return 302, {"Location": location}, b""
            return 200, {}, self._item_json(item, delta=False)
        m = re.fullmatch(r"/groups/([^/]+)/(transitiveMembers|owners|members)", path)
        if m:
            group = self.groups.get(m.group(1))
            if group is None:
                return (
                    404,
                    {},
                    _error("Request_ResourceNotFound", f"Resource '{m.group(1)}' does not exist."),
                )
            if m.group(2) == "owners":
                objects = [self._directory_object(i) for i in group["owners"]]
            elif m.group(2) == "members":
                objects = [self._directory_object(i) for i in group["members"]]
            else:
                objects = [self._directory_object(i) for i in self._transitive(m.group(1))]
            return self._paged(path, req, [o for o in objects if o])
        if path == "/users":
            return self._paged(path, req, [self._user_json(u) for u in self.users.values()])
        return 404, {}, _error("itemNotFound", "No such route.")

    def _paged(
        self, path: str, req: FakeRequest, objects: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], Any]:
        offset = int(req.query.get("$skiptoken") or 0)
        size = self.member_page_size
        page = objects[offset : offset + size]
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#directoryObjects",
            "value": page,
        }
        if offset + size < len(objects):
            query = {k: v for k, v in req.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(offset + size)
            body["@odata.nextLink"] = f"{self.graph_url}{path}?{urlencode(query)}"
        return 200, {}, body

    def _transitive(self, group_id: str, seen: set[str] | None = None) -> list[str]:
        seen = seen if seen is not None else {group_id}
        out: list[str] = []
        for member in self.groups[group_id]["members"]:
            if member in seen:
                continue
            seen.add(member)
            out.append(member)
            if member in self.groups:
                out.extend(self._transitive(member, seen))
        return out

    def _directory_object(self, object_id: str) -> dict[str, Any] | None:
        if object_id in self.users:
            return self._user_json(self.users[object_id])
        if object_id in self.groups:
            group = self.groups[object_id]
            return {
                "@odata.type": "#microsoft.graph.group",
                "id": group["id"],
                "mail": group["mail"],
                "userPrincipalName": None,
            }
        return None

    def _user_json(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.user",
            "id": user["id"],
            "mail": user["mail"],
            "userPrincipalName": user["userPrincipalName"],
            "userType": user["userType"],
        }

    def _site_json(self, site: FakeSite) -> dict[str, Any]:
        return {
            "@odata.context": f"{self.graph_url}/$metadata#sites/$entity",
            "createdDateTime": "2024-02-01T10:00:00Z",
            "description": "",
            "id": site.id,
            "lastModifiedDateTime": "2026-11-19T16:00:00Z",
            "name": site.path,
            "webUrl": site.web_url,
            "displayName": site.display_name,
            "root": {},
            "siteCollection": {"hostname": GRAPH_HOST},
        }

    def _drive_json(self, drive: FakeDrive, with_ids: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": drive.id,
            "name": drive.name,
            "driveType": drive.drive_type,
            "webUrl": drive.web_url,
            "createdDateTime": "2024-02-01T10:00:00Z",
        }
        if with_ids and drive.site is not None:
            data["sharePointIds"] = {
                "siteId": drive.site.collection_id,
                "siteUrl": drive.site.web_url,
                "webId": drive.site.web_id,
            }
        return data

    def _path_of(self, item: FakeItem) -> str:
        parts: list[str] = []
        node: FakeItem | None = item
        while node is not None and not node.root:
            parts.append(node.name)
            node = self.items.get(node.parent_id or "")
        return "/".join(reversed(parts))

    def _item_json(self, item: FakeItem, *, delta: bool) -> dict[str, Any]:
        drive = self.drives[item.drive_id]
        if item.deleted:
            return {
                "id": item.id,
                "parentReference": {
                    "driveType": drive.drive_type,
                    "driveId": drive.id,
                    "id": item.parent_id,
                },
                "deleted": {"state": "deleted"},
                **({"folder": {"childCount": 0}} if item.folder else {}),
            }
        data: dict[str, Any] = {
            "createdBy": {"user": {"email": item.author, "displayName": item.author.split("@")[0]}},
            "createdDateTime": "2026-11-01T08:00:00Z",
            "eTag": f'"{{{item.guid.upper()}}},{item.version}"',
            "id": item.id,
            "lastModifiedBy": {
                "user": {"email": item.author, "displayName": item.author.split("@")[0]}
            },
            "lastModifiedDateTime": item.modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "name": item.name,
            "webUrl": drive.web_url
            if item.root
            else f"{drive.web_url}/{quote(self._path_of(item))}",
            "cTag": f'"c:{{{item.guid.upper()}}},{item.content_version}"',
            "size": len(item.content),
        }
        if item.root:
            data["root"] = {}
            data["folder"] = {"childCount": 0}
        else:
            parent = self.items[item.parent_id or ""]
            reference: dict[str, Any] = {
                "driveType": drive.drive_type,
                "driveId": drive.id,
                "id": parent.id,
            }
            if not delta:  # delta never fills parentReference.path
                parent_path = self._path_of(parent)
                reference["path"] = f"/drives/{drive.id}/root:" + (
                    f"/{quote(parent_path)}" if parent_path else ""
                )
            data["parentReference"] = reference
            if item.folder:
                data["folder"] = {
                    "childCount": sum(
                        1 for i in self.items.values() if i.parent_id == item.id and not i.deleted
                    )
                }
            else:
                data["file"] = {
                    "mimeType": _mime(item.name),
                    "hashes": {"quickXorHash": hashlib.sha1(item.content).hexdigest()},
                }
        if drive.site is not None:
            data["sharepointIds"] = {
                "listId": _uuid(f"list-{drive.id}"),
                "listItemId": str(int(hashlib.sha1(item.id.encode()).hexdigest()[:4], 16)),
                "listItemUniqueId": item.guid,
                "siteId": drive.site.collection_id,
                "siteUrl": drive.site.web_url,
                "tenantId": self.tenant_id,
                "webId": drive.site.web_id,
            }
        return data

    def _delta(self, drive_id: str, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        drive = self.drives.get(drive_id)
        if drive is None:
            return 404, {}, _error("itemNotFound", "The drive cannot be found.")
        base = f"{self.graph_url}/drives/{drive_id}/root/delta"
        skip = req.query.get("$skiptoken")
        token = req.query.get("token")
        if skip:
            enumeration = self._enumerations.get(skip.split(".")[0])
            if enumeration is None:
                return 400, {}, _error("invalidRequest", "Invalid skip token.")
            offset = int(skip.split(".")[1])
        elif token == "latest":
            enumeration = _Enumeration(self._generation, [], self._seq, 1)
            offset = 0
        elif token:
            generation, _, since = token.partition("-")
            if int(generation) != self._generation:
                return self._gone(base)
            entries = [snap for seq, snap in self._log[drive_id] if seq > int(since)]
            top = int(req.query.get("$top") or 200)
            enumeration = _Enumeration(self._generation, entries, self._seq, top)
            offset = 0
        else:
            entries = [self._item_json(i, delta=True) for i in self._tree(drive)]
            top = int(req.query.get("$top") or 200)
            enumeration = _Enumeration(self._generation, entries, self._seq, top)
            offset = 0
        if enumeration.generation != self._generation:
            return self._gone(base)
        page = enumeration.entries[offset : offset + enumeration.top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#Collection(driveItem)",
            "value": page,
        }
        if offset + enumeration.top < len(enumeration.entries):
            key = skip.split(".")[0] if skip else secrets.token_hex(6)
            self._enumerations[key] = enumeration
            body["@odata.nextLink"] = f"{base}?$skiptoken={key}.{offset + enumeration.top}"
        else:
            body["@odata.deltaLink"] = (
                f"{base}?token={enumeration.generation}-{enumeration.end_seq}"
            )
        return 200, {}, body

    def _gone(self, base: str) -> tuple[int, dict[str, str], Any]:
        return (
            410,
            {"Location": base},
            {
                "error": {
                    "code": "resyncRequired",
                    "message": "Resync required. Replace any local items with the server's version "
                    "(including deletes) if you're sure that the service was up to date with your "
                    "local changes when you last sync'd. Upload any local changes that the server "
                    "doesn't know about.",
                    "innerError": {"code": "resyncChangesApplyDifferences"},
                }
            },
        )

    def _tree(self, drive: FakeDrive) -> list[FakeItem]:
        """Live items, parents before children (as a fresh delta enumeration returns them)."""
        out: list[FakeItem] = []
        queue = [self.items[drive.root_id]]
        while queue:
            node = queue.pop(0)
            out.append(node)
            queue.extend(i for i in self.items.values() if i.parent_id == node.id and not i.deleted)
        return out

    def _sharepoint(self, req: FakeRequest) -> tuple[int, dict[str, str], Any]:
        if req.path == "/_layouts/15/download.aspx":
            if req.authorization:
                return (
                    401,
                    {},
                    _error(
                        "-2147024891, System.UnauthorizedAccessException",
                        "Access denied: do not send a bearer token here.",
                    ),
                )
            item_id = self._downloads.get(req.query.get("tempauth", ""))
            item = self.items.get(item_id or "")
            if item is None or item.deleted:
                return 404, {}, b"Not Found"
            return 200, {"Content-Type": "application/octet-stream"}, item.content
        m = re.fullmatch(r"/sites/([^/]+)/_api/web/sitegroups/getbyid\((\d+)\)/users", req.path)
        if m:
            scope = self._tokens.get((req.authorization or "").removeprefix("Bearer ").strip())
            if scope != self.sharepoint_scope:
                return 401, {}, {"error_description": "Unsupported app only token."}
            site = self.sites.get(m.group(1))
            if site is None or int(m.group(2)) not in site.site_groups:
                return (
                    404,
                    {},
                    {
                        "odata.error": {
                            "code": "-2146232832, Microsoft.SharePoint.SPException",
                            "message": {"lang": "en-US", "value": "Group cannot be found."},
                        }
                    },
                )
            return 200, {}, {"value": site.site_groups[int(m.group(2))]}
        return 404, {}, b"Not Found"

    # -- assertions helpers ------------------------------------------------------------------

    def requests_to(self, pattern: str, *, inner: bool | None = None) -> list[FakeRequest]:
        """Requests whose path matches the regex ``pattern``."""
        rx = re.compile(pattern)
        return [
            r for r in self.requests if rx.search(r.path) and (inner is None or r.inner == inner)
        ]


def make_source_config(
    fake: FakeSharePoint,
    name: str,
    tmp_path: Path,
    *,
    sites: Iterable[str] | None = None,
    page_size: int = 200,
    retry: dict[str, Any] | None = None,
    **sharepoint: Any,
) -> dict[str, Any]:
    """The ``trove.yaml`` source block for ``fake`` (secret in a file under ``tmp_path``).

    The fake is reached with no code injection: ``graph_url`` points at it and
    ``token_url`` makes the connector use the plain client-credentials POST
    (loopback only) instead of msal. Retries are fast (``retry`` overrides), so a
    throttled end-to-end run stays quick; ``sharepoint`` overrides the block's keys.
    """
    secret = tmp_path / f"{name}-client-secret"
    secret.write_text(fake.client_secret + "\n", encoding="utf-8")
    secret.chmod(0o600)
    block: dict[str, Any] = {
        "tenant_id": fake.tenant_id,
        "client_id": fake.client_id,
        "client_secret": {"file": str(secret)},
        "token_url": fake.token_url,
        "graph_url": fake.graph_url,
        "sites": [f"{GRAPH_HOST}:/sites/{s}" for s in (sites if sites is not None else fake.sites)],
        "page_size": page_size,
        # Tests mutate the tenant between reads of one process: no sharing unless a
        # test asks for it (the product default is 300 s, docs/connectors.md).
        "shared_permission_reads_s": 0,
    }
    block.update(sharepoint)
    return {
        "name": name,
        "type": "sharepoint",
        "sharepoint": block,
        "retry": {
            "max_attempts": 4,
            "base_delay_s": 0.01,
            "max_delay_s": 0.05,
            "max_total_s": 5.0,
            **(retry or {}),
        },
    }


def _uuid(seed: str) -> str:
    h = hashlib.md5(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def _mime(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {
        "md": "text/markdown",
        "txt": "text/plain",
        "html": "text/html",
        "pdf": "application/pdf",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }.get(ext, "application/octet-stream")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": "2026-11-20T09:00:00", "request-id": "fake"},
        }
    }


def _parse_form(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
