"""A stateful fake Confluence Cloud site on a real loopback HTTP server.

Built on pytest-httpserver: one catch-all handler routes every request by path,
so the connector's real httpx code talks to it as to ``https://x.atlassian.net``.
The model is mutable (spaces, pages with parent chains and bodies, folders,
drafts, attachments, space permissions, read restrictions, users, groups) and
responses follow the real shapes of reference §1: v2 cursor paging with
``_links.next`` (site-relative) and a ``Link`` header, v1 CQL search with
``next`` links relative to ``/wiki``, v1 offset paging for groups.

Usage from any test (the e2e test included)::

    fake = FakeConfluence()
    fake.start()
    fake.add_user("u-bob", "Bob", "bob@example.com")
    fake.add_group("eng", ["u-bob"])
    fake.add_space("ENG", groups=["eng"])
    home = fake.add_page("ENG", "Home", "<p>Welcome</p>")
    source = make_source_config(fake, "wiki")  # set env TOKEN_ENV = fake.token
    ...
    fake.edit_page(home, "<p>New text</p>")
    fake.stop()

Time: ``fake.clock`` runs with the real clock plus an offset that only
:meth:`FakeClock.advance` moves, so the ``Date`` header (the real clock, added
by the HTTP server) and ``lastmodified`` agree. CQL dates are read in the API
user's time zone, ``tz_offset_minutes``.

Requests are checked like the real site checks them: a path the site does not
serve, or a query parameter the endpoint does not document, is answered 400 in
the vendor's error shape (v2: ``{"errors": [{"status", "code", "title",
"detail"}]}``; v1: ``{"statusCode", "data", "message"}``), never with a silent
default. Each endpoint's parameter list and each payload follows Atlassian's
published reference, named next to it:

* v2 — Confluence Cloud REST API v2 (OpenAPI 2.0.0),
  https://developer.atlassian.com/cloud/confluence/rest/v2/ : "Space" (Get
  spaces: ``type`` takes one value of global, collaboration, knowledge_base,
  personal — CONFCLOUD-78652), "Space Permissions" (Get space permissions
  assignments: ``principal.type`` is user, group or role), "Page" (Get pages in
  space, Get page by id), "Ancestors" (Get all ancestors of page: ``results``
  of ``{id, type}`` top-down), "Folder", "Attachment".
* v1 — https://developer.atlassian.com/cloud/confluence/rest/v1/ : "Search
  content by CQL", "Content restrictions" (Get restrictions by operation),
  "Users" (Get user), "Group" (Get groups; Get group members by group id,
  ``/group/{groupId}/membersByGroupId``, ``limit`` <= 200; the deprecated
  ``/group/member`` requires ``name``).

Faults: :meth:`throttle_next` (429 + ``Retry-After``), :meth:`fail_next`
(any status, optionally for one path), :meth:`invalid_cql_date_next` (the DST
400), :meth:`empty_search_page_next` (no results but a ``next`` link). A CQL
search that expands ancestors' restrictions over a page with a draft or
trashed ancestor answers the CONFCLOUD-77618 404 by itself.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.base import GroupSnapshot
from core.acl import Principal

EMAIL = "svc-trove@example.com"
TOKEN = "fake-atl-token-7Qz9Xk2Lp"  # only ever valid against this fake
TOKEN_ENV = "TROVE_TEST_CONFLUENCE_TOKEN"

PAYLOADS = Path(__file__).parent / "payloads"
# Atlassian's OpenAPI names the principal type "role" but not the role ids; this
# one is an assumption (see payloads/space_permissions_roles.json).
LOGGED_IN_ROLE = "LOGGED_IN_USERS"
SPACE_TYPES = ("global", "collaboration", "knowledge_base", "personal")


def payload(name: str) -> dict[str, Any]:
    """A recorded-shape JSON payload from ``payloads/``."""
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class FakeClock:
    """The real clock plus an offset moved only by :meth:`advance`."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class FakeUser:
    account_id: str
    name: str
    email: str | None  # None: hidden by the user's privacy settings


@dataclass
class FakeGroup:
    id: str
    name: str
    members: list[str]


@dataclass
class FakeSpace:
    id: str
    key: str
    name: str
    type: str = "global"
    permissions: list[dict[str, Any]] = field(default_factory=list)
    homepage_id: str | None = None


@dataclass
class FakeContent:
    """A page or folder. ``status`` is current, draft or trashed."""

    id: str
    type: str
    space_key: str
    title: str
    parent_id: str | None
    body: str
    version: int
    created_at: datetime
    modified_at: datetime
    author_id: str
    status: str = "current"
    read_users: list[str] = field(default_factory=list)  # account ids
    read_groups: list[str] = field(default_factory=list)  # group ids
    raw_read: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, entry)
    linger: bool = False  # purged, but still in listings and search (stale index)


@dataclass
class FakeAttachment:
    id: str
    page_id: str
    title: str
    media_type: str
    data: bytes
    version: int
    created_at: datetime
    modified_at: datetime
    author_id: str
    status: str = "current"
    linger: bool = False  # purged with its page, but still in search (stale index)


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None: forever
    path: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # without the query string
    args: dict[str, list[str]]

    def arg(self, name: str) -> str | None:
        values = self.args.get(name)
        return values[0] if values else None


_CQL_TYPES = re.compile(r"type\s*(?:=\s*(\w+)|in\s*\(([^)]*)\))", re.I)
_CQL_SPACES = re.compile(r"space\s*(?:=\s*'?([\w~-]+)'?|in\s*\(([^)]*)\))", re.I)
_CQL_SPACE_TYPE = re.compile(r"space\.type\s*=\s*'?(\w+)'?", re.I)
_CQL_SINCE = re.compile(r"lastmodified\s*>=\s*'([^']*)'", re.I)
_CQL_ORDER = re.compile(r"order\s+by\s+lastmodified\s+asc\s*$", re.I)


class FakeConfluence:
    """The fake site. ``url`` is the site root; the connector's ``url`` is ``wiki_url``."""

    def __init__(
        self,
        *,
        email: str = EMAIL,
        token: str = TOKEN,
        tz_offset_minutes: int = 0,
        search_limit_cap: int = 50,
        v2_limit_cap: int = 250,
        v1_limit_cap: int = 200,
        server: HTTPServer | None = None,
    ) -> None:
        # A shared, already running server can be passed in (tests reuse one per
        # session: stopping a werkzeug server costs about half a second).
        self._owns_server = server is None
        self.server = server or HTTPServer(host="127.0.0.1")
        self.email = email
        self.token = token
        self.tz_offset_minutes = tz_offset_minutes
        self.search_limit_cap = search_limit_cap
        self.v2_limit_cap = v2_limit_cap
        self.v1_limit_cap = v1_limit_cap
        self.clock = FakeClock()
        self.users: dict[str, FakeUser] = {}
        self.groups: dict[str, FakeGroup] = {}  # by id
        self.spaces: dict[str, FakeSpace] = {}  # by key
        self.contents: dict[str, FakeContent] = {}
        self.attachments: dict[str, FakeAttachment] = {}
        self.calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._invalid_dates = 0
        self._empty_search_pages = 0
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self.add_user("u-svc", "Trove service", email)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeConfluence:
        if not self.server.is_running():
            self.server.start()
        self.server.clear_all_handlers()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.clear_all_handlers()
            self.server.clear()
            if self._owns_server:
                self.server.stop()

    def __enter__(self) -> FakeConfluence:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def wiki_url(self) -> str:
        return self.url + "/wiki"

    def calls_to(self, path_prefix: str) -> list[Call]:
        """Requests received whose path starts with ``path_prefix`` (``/wiki/rest/api/...``)."""
        with self._lock:
            return [c for c in self.calls if c.path.startswith(path_prefix)]

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- directory ----------------------------------------------------------------------

    def add_user(self, account_id: str, name: str, email: str | None = None) -> FakeUser:
        user = FakeUser(account_id, name, email)
        self.users[account_id] = user
        return user

    def add_group(self, name: str, members: list[str] | None = None) -> FakeGroup:
        gid = f"00000000-0000-4000-8000-{next(self._ids):012d}"
        group = FakeGroup(gid, name, list(members or []))
        self.groups[gid] = group
        return group

    def group(self, name_or_id: str) -> FakeGroup:
        if name_or_id in self.groups:
            return self.groups[name_or_id]
        for group in self.groups.values():
            if group.name == name_or_id:
                return group
        raise KeyError(f"no group {name_or_id!r}")

    def set_group_members(self, group: str, members: list[str]) -> None:
        self.group(group).members = list(members)

    # -- spaces -------------------------------------------------------------------------

    def add_space(
        self,
        key: str,
        name: str | None = None,
        *,
        users: list[str] | None = None,
        groups: list[str] | None = None,
        anonymous: bool = False,
        type: str = "global",
    ) -> FakeSpace:
        space = FakeSpace(
            id=str(next(self._ids) * 64), key=key, name=name or f"{key} space", type=type
        )
        self.spaces[key] = space
        self.set_space_permissions(key, users=users, groups=groups, anonymous=anonymous)
        return space

    def set_space_permissions(
        self,
        key: str,
        *,
        users: list[str] | None = None,
        groups: list[str] | None = None,
        anonymous: bool = False,
        logged_in: bool = False,
        extra: list[dict[str, Any]] | None = None,
    ) -> None:
        """Who may view the space (users by account id, groups by name or id).

        ``anonymous`` and ``logged_in`` add the v2 role principals (the issue's
        documented ``{"type": "role", "id": "ANONYMOUS"}``; the logged-in role id
        is :data:`LOGGED_IN_ROLE`, see ``payloads/space_permissions_roles.json``).
        ``extra`` adds raw principals (e.g. ``{"type": "role", "id": "r1"}``) with read access.
        Every principal also gets a non-read permission, as real spaces do.
        """
        principals: list[dict[str, str]] = [{"type": "user", "id": u} for u in users or []]
        principals += [{"type": "group", "id": self.group(g).id} for g in groups or []]
        if anonymous:
            principals.append({"type": "role", "id": "ANONYMOUS"})
        if logged_in:
            principals.append({"type": "role", "id": LOGGED_IN_ROLE})
        principals += list(extra or [])
        entries = []
        for principal in principals:
            for op in (
                {"key": "read", "targetType": "space"},
                {"key": "create", "targetType": "page"},
            ):
                entries.append(
                    {"id": str(next(self._ids)), "principal": dict(principal), "operation": op}
                )
        self.spaces[key].permissions = entries

    # -- pages ---------------------------------------------------------------------------

    def add_page(
        self,
        space: str,
        title: str,
        body: str = "<p>text</p>",
        *,
        parent: str | None = None,
        author: str = "u-svc",
        status: str = "current",
    ) -> str:
        """A page (``status="draft"`` for an unpublished draft); returns its id."""
        return self._add_content("page", space, title, body, parent, author, status)

    def add_folder(self, space: str, title: str, *, parent: str | None = None) -> str:
        return self._add_content("folder", space, title, "", parent, "u-svc", "current")

    def _add_content(
        self,
        kind: str,
        space: str,
        title: str,
        body: str,
        parent: str | None,
        author: str,
        status: str,
    ) -> str:
        if space not in self.spaces:
            raise KeyError(f"no space {space!r}")
        if parent is not None and parent not in self.contents:
            raise KeyError(f"no parent {parent!r}")
        now = self.clock.now()
        cid = str(next(self._ids) * 1000 + 7)
        self.contents[cid] = FakeContent(
            id=cid,
            type=kind,
            space_key=space,
            title=title,
            parent_id=parent,
            body=body,
            version=1,
            created_at=now,
            modified_at=now,
            author_id=author,
            status=status,
        )
        return cid

    def page(self, page_id: str) -> FakeContent:
        return self.contents[page_id]

    def edit_page(self, page_id: str, body: str) -> None:
        page = self.contents[page_id]
        page.body = body
        self._bump(page)

    def rename_page(self, page_id: str, title: str) -> None:
        page = self.contents[page_id]
        page.title = title
        self._bump(page)

    def move_page(self, page_id: str, parent: str | None) -> None:
        """Re-parent a page (no new version: only list_ids sees the new path)."""
        self.contents[page_id].parent_id = parent

    def publish_page(self, page_id: str) -> None:
        page = self.contents[page_id]
        page.status = "current"
        self._bump(page)

    def _bump(self, item: FakeContent | FakeAttachment) -> None:
        item.version += 1
        item.modified_at = self.clock.now()

    def trash_page(self, page_id: str, *, with_children: bool = False) -> None:
        """Move a page to the trash; its children move up to its parent unless trashed too."""
        page = self.contents[page_id]
        page.status = "trashed"
        page.modified_at = self.clock.now()
        for child in [c for c in self.contents.values() if c.parent_id == page_id]:
            if with_children:
                self.trash_page(child.id, with_children=True)
            elif child.status != "trashed":
                child.parent_id = page.parent_id

    def purge_page(self, page_id: str, *, linger: bool = False) -> None:
        """Delete a page for good. ``linger``: listings and search still show it (stale index)."""
        page = self.contents[page_id]
        for att in [a for a in self.attachments.values() if a.page_id == page_id]:
            if linger:
                att.linger, att.status = True, "purged"
            else:
                del self.attachments[att.id]
        if linger:
            page.linger = True
            page.status = "purged"
        else:
            del self.contents[page_id]

    def restrict_page(
        self, page_id: str, *, users: list[str] | None = None, groups: list[str] | None = None
    ) -> None:
        """Set the read restriction (users by account id, groups by name); both empty lifts it."""
        content = self.contents[page_id]
        content.read_users = list(users or [])
        content.read_groups = [self.group(g).id for g in groups or []]
        content.raw_read = []

    def add_raw_restriction(self, page_id: str, kind: str, entry: dict[str, Any]) -> None:
        """Add a verbatim entry (``kind`` user or group) to a read restriction: an unknown type."""
        self.contents[page_id].raw_read.append((kind, entry))

    # -- attachments -----------------------------------------------------------------------

    def add_attachment(
        self, page_id: str, title: str, data: bytes, media_type: str = "application/octet-stream"
    ) -> str:
        now = self.clock.now()
        aid = f"att{next(self._ids) * 1000 + 3}"
        self.attachments[aid] = FakeAttachment(
            aid, page_id, title, media_type, data, 1, now, now, "u-svc"
        )
        return aid

    def edit_attachment(self, attachment_id: str, data: bytes) -> None:
        att = self.attachments[attachment_id]
        att.data = data
        self._bump(att)

    # -- faults ------------------------------------------------------------------------------

    def throttle_next(
        self, n: int = 1, retry_after: str | int = 2, *, status: int = 429, path: str | None = None
    ) -> None:
        """The next ``n`` requests (to ``path`` if given) answer ``status`` with ``Retry-After``."""
        # X-RateLimit-Reset: the request time plus the Retry-After period, as
        # yyyy-MM-ddTHH:mmZ (developer.atlassian.com/cloud/confluence/rate-limiting).
        wait = (
            float(retry_after)
            if str(retry_after).isdigit()
            else max(0.0, (parsedate_to_datetime(str(retry_after)) - datetime.now(UTC)).seconds)
        )
        reset = (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%Y-%m-%dT%H:%MZ")
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset,
            "RateLimit-Reason": "confluence-burst-based",
        }
        self._faults.append(_Fault(status, n, path, headers, payload("error_429.json")))

    def fail_next(
        self,
        n: int | None = 1,
        status: int = 500,
        *,
        path: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """The next ``n`` requests (``None``: all) to ``path`` (a prefix) answer ``status``."""
        default = {"statusCode": status, "message": f"fake failure {status}"}
        self._faults.append(_Fault(status, n, path, {}, body or default))

    def clear_faults(self) -> None:
        self._faults.clear()

    def invalid_cql_date_next(self, n: int = 1) -> None:
        self._invalid_dates += n

    def empty_search_page_next(self, n: int = 1) -> None:
        self._empty_search_pages += n

    # -- HTTP ----------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        with self._lock:
            args = {k: request.args.getlist(k) for k in request.args}
            self.calls.append(Call(request.method, request.path, args))
            expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _json(payload("error_401.json"), 401)
            for fault in self._faults:
                if fault.path and not request.path.startswith(fault.path):
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                return _json(fault.body or {}, fault.status, fault.headers)
            try:
                return self._route(request)
            except _HttpError as exc:
                return _json(exc.body_for(request.path), exc.status)

    def _route(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/media/"):
            return self._media(path)
        if not path.startswith("/wiki/"):
            raise _HttpError(404, "not a wiki path")
        path = path[len("/wiki") :]
        for pattern, handler, allowed in self._routes():
            match = re.fullmatch(pattern, path)
            if match:
                missing = [a for a in _REQUIRED.get(pattern, ()) if not request.args.get(a)]
                if missing:
                    raise _HttpError(400, f"The '{missing[0]}' query parameter is required")
                unknown = sorted(set(request.args) - allowed)
                if unknown:
                    raise _HttpError(
                        400, f"Unknown query parameter(s) {', '.join(unknown)} for {path}", v2=path
                    )
                return handler(request, *match.groups())
        raise _HttpError(400, f"No operation serves {path}", v2=path)

    def _routes(self) -> list[tuple[str, Any, frozenset[str]]]:
        """(path pattern, handler, the query parameters the reference documents)."""
        include = {
            "include-labels",
            "include-properties",
            "include-operations",
            "include-likes",
            "include-versions",
            "include-version",
            "include-favorited-by-current-user-status",
            "include-webresources",
            "include-collaborators",
            "include-direct-children",
        }
        return [
            (
                r"/api/v2/spaces",
                self._v2_spaces,
                frozenset(
                    {"ids", "keys", "type", "status", "labels", "favorited-by"}
                    | {"not-favorited-by", "sort", "description-format", "include-icon"}
                    | {"cursor", "limit"}
                ),
            ),
            (
                r"/api/v2/spaces/(\d+)",
                self._v2_space,
                frozenset({"description-format", "include-icon", "include-permissions"})
                | frozenset({"include-role-assignments", "include-labels", "include-operations"})
                | frozenset({"include-properties"}),
            ),
            (
                r"/api/v2/spaces/(\d+)/permissions",
                self._v2_space_permissions,
                frozenset({"cursor", "limit"}),
            ),
            (
                r"/api/v2/spaces/(\d+)/pages",
                self._v2_space_pages,
                frozenset({"depth", "sort", "status", "title", "body-format", "cursor", "limit"}),
            ),
            (
                r"/api/v2/pages/(\d+)",
                self._v2_page,
                frozenset({"body-format", "get-draft", "status", "version"}) | include,
            ),
            (r"/api/v2/folders/(\d+)", self._v2_folder, frozenset(include)),
            (
                r"/api/v2/pages/(\d+)/ancestors",
                self._v2_page_ancestors,
                frozenset({"limit"}),
            ),
            (
                r"/api/v2/pages/(\d+)/attachments",
                self._v2_page_attachments,
                frozenset({"sort", "cursor", "status", "mediaType", "filename", "limit"}),
            ),
            (
                r"/api/v2/attachments/(att\d+)",
                self._v2_attachment,
                frozenset({"version"}) | include,
            ),
            (
                r"/download/attachments/(\d+)/(.+)",
                self._download,
                frozenset({"version", "modificationDate", "cacheVersion", "api"}),
            ),
            (
                r"/rest/api/content/search",
                self._v1_search,
                frozenset({"cql", "cqlcontext", "cursor", "next", "prev", "limit", "start"})
                | frozenset({"includeArchivedSpaces", "excludeCurrentSpaces", "excerpt"})
                | frozenset({"sitePermissionTypeFilter", "expand"}),
            ),
            (
                r"/rest/api/content/(\w+)/restriction/byOperation/read",
                self._v1_read_restriction,
                frozenset({"expand", "start", "limit"}),
            ),
            (
                r"/rest/api/content/(\w+)",
                self._v1_content,
                frozenset({"status", "version", "embeddedContentRender", "expand", "trigger"}),
            ),
            (r"/rest/api/user", self._v1_user, frozenset({"accountId", "expand"})),
            (
                r"/rest/api/group",
                self._v1_groups,
                frozenset({"start", "limit", "accessType", "expand"}),
            ),
            (
                r"/rest/api/group/([^/]+)/membersByGroupId",
                self._v1_group_members_by_id,
                frozenset({"start", "limit", "shouldReturnTotalSize", "expand"}),
            ),
            (
                r"/rest/api/group/member",
                self._v1_group_members,
                frozenset({"name", "start", "limit", "shouldReturnTotalSize", "expand"}),
            ),
        ]

    # -- v2 ------------------------------------------------------------------------------------

    def _paged_v2(self, request: Request, items: list[dict[str, Any]], path: str) -> Response:
        limit = max(1, min(int(request.args.get("limit", 25)), self.v2_limit_cap))
        offset = _decode_cursor(request.args.get("cursor"))
        chunk = items[offset : offset + limit]
        links: dict[str, str] = {"base": self.wiki_url}
        headers: dict[str, str] = {}
        if offset + limit < len(items):
            params = [
                (k, v) for k in request.args for v in request.args.getlist(k) if k != "cursor"
            ]
            params.append(("cursor", _encode_cursor(offset + limit)))
            links["next"] = f"/wiki{path}?{urlencode(params)}"
            headers["Link"] = f'<{links["next"]}>; rel="next", <{self.wiki_url}>; rel="base"'
        return _json({"results": chunk, "_links": links}, 200, headers)

    def _v2_spaces(self, request: Request) -> Response:
        keys = {k for v in request.args.getlist("keys") for k in v.split(",") if k}
        kind = request.args.get("type")
        if kind is not None and kind not in SPACE_TYPES:
            # One value only (CONFCLOUD-78652): "global,collaboration" is refused.
            raise _HttpError(400, f"Invalid value for type: {kind}", v2="/api/v2/spaces")
        spaces = [
            self._space_json(s)
            for s in sorted(self.spaces.values(), key=lambda s: int(s.id))
            if (not keys or s.key in keys) and (not kind or s.type == kind)
        ]
        return self._paged_v2(request, spaces, "/api/v2/spaces")

    def _space_or_404(self, space_id: str) -> FakeSpace:
        for space in self.spaces.values():
            if space.id == space_id:
                return space
        raise _HttpError(404, f"No space with id {space_id}")

    def _v2_space(self, request: Request, space_id: str) -> Response:
        return _json(self._space_json(self._space_or_404(space_id)))

    def _v2_space_permissions(self, request: Request, space_id: str) -> Response:
        space = self._space_or_404(space_id)
        return self._paged_v2(request, space.permissions, f"/api/v2/spaces/{space_id}/permissions")

    def _v2_space_pages(self, request: Request, space_id: str) -> Response:
        space = self._space_or_404(space_id)
        body = request.args.get("body-format") == "storage"
        pages = [
            self._page_v2(c, body=body)
            for c in sorted(self.contents.values(), key=lambda c: int(c.id))
            if c.space_key == space.key and c.type == "page" and (c.status == "current" or c.linger)
        ]
        return self._paged_v2(request, pages, f"/api/v2/spaces/{space_id}/pages")

    def _live(self, content_id: str, kind: str = "page") -> FakeContent:
        content = self.contents.get(content_id)
        if content is None or content.status != "current" or content.type != kind:
            raise _HttpError(404, f"No {kind} with id {content_id}")
        return content

    def _v2_page(self, request: Request, page_id: str) -> Response:
        statuses = request.args.getlist("status") or ["current"]
        content = self.contents.get(page_id)
        if content is None or content.type != "page" or content.status not in statuses:
            raise _HttpError(404, f"No page with id {page_id}", v2="/api/v2/pages")
        return _json(self._page_v2(content, body=request.args.get("body-format") == "storage"))

    def _v2_page_ancestors(self, request: Request, page_id: str) -> Response:
        """All ancestors, top-down, as ``{id, type}`` (v2 "Get all ancestors of page")."""
        page = self._live(page_id)
        items = [{"id": a.id, "type": a.type} for a in self._ancestors(page)]
        return self._paged_v2(request, items, f"/api/v2/pages/{page_id}/ancestors")

    def _v2_folder(self, request: Request, folder_id: str) -> Response:
        return _json(self._page_v2(self._live(folder_id, "folder"), body=False))

    def _v2_page_attachments(self, request: Request, page_id: str) -> Response:
        self._live(page_id)
        atts = [
            self._attachment_v2(a)
            for a in sorted(self.attachments.values(), key=lambda a: a.id)
            if a.page_id == page_id and a.status == "current"
        ]
        return self._paged_v2(request, atts, f"/api/v2/pages/{page_id}/attachments")

    def _v2_attachment(self, request: Request, attachment_id: str) -> Response:
        att = self.attachments.get(attachment_id)
        if att is None or att.status != "current":
            raise _HttpError(404, f"No attachment with id {attachment_id}")
        return _json(self._attachment_v2(att))

    def _download(self, request: Request, page_id: str, filename: str) -> Response:
        for att in self.attachments.values():
            if att.page_id == page_id and att.title == filename and att.status == "current":
                # Like Cloud: a redirect to the media service, which needs no auth header.
                return Response(status=302, headers={"Location": f"{self.url}/media/{att.id}"})
        raise _HttpError(404, f"No attachment {filename} on {page_id}")

    def _media(self, path: str) -> Response:
        att = self.attachments.get(path.rsplit("/", 1)[-1])
        if att is None:
            raise _HttpError(404, "no such file")
        return Response(att.data, 200, content_type=att.media_type)

    # -- v1 ------------------------------------------------------------------------------------

    def _v1_read_restriction(self, request: Request, content_id: str) -> Response:
        content = self.contents.get(content_id)
        if content is None or content.status in ("trashed", "purged"):
            raise _HttpError(404, f"No content with id {content_id}")
        return _json(self._restriction_v1(content))

    def _v1_content(self, request: Request, content_id: str) -> Response:
        content = self.contents.get(content_id)
        if content is None or content.status in ("trashed", "purged"):
            raise _HttpError(404, f"No content with id {content_id}")
        expand = set(filter(None, (request.args.get("expand") or "").split(",")))
        return _json(self._content_v1(content, expand))

    def _v1_user(self, request: Request) -> Response:
        user = self.users.get(request.args.get("accountId") or "")
        if user is None:
            raise _HttpError(404, "No user found with accountId")
        return _json(self._user_v1(user))

    def _offset_page(self, request: Request, items: list[dict[str, Any]], path: str) -> Response:
        start = int(request.args.get("start", 0))
        limit = max(1, min(int(request.args.get("limit", 200)), self.v1_limit_cap))
        chunk = items[start : start + limit]
        links = {"base": self.wiki_url, "context": "/wiki", "self": f"{self.wiki_url}{path}"}
        if start + limit < len(items):
            links["next"] = (
                f"{path}?{urlencode({**request.args.to_dict(), 'start': start + limit})}"
            )
        return _json(
            {"results": chunk, "start": start, "limit": limit, "size": len(chunk), "_links": links}
        )

    def _v1_groups(self, request: Request) -> Response:
        groups = [self._group_v1(g) for g in sorted(self.groups.values(), key=lambda g: g.name)]
        return self._offset_page(request, groups, "/rest/api/group")

    def _v1_group_members_by_id(self, request: Request, group_id: str) -> Response:
        group = self.groups.get(group_id)
        if group is None:
            raise _HttpError(404, f"No group found with id : {group_id}")
        members = [self._user_v1(self.users[m]) for m in group.members if m in self.users]
        return self._offset_page(request, members, f"/rest/api/group/{group_id}/membersByGroupId")

    def _v1_group_members(self, request: Request) -> Response:
        """The deprecated by-name endpoint: ``name`` is required (``?id=`` is refused)."""
        name = request.args.get("name")
        if not name:
            raise _HttpError(400, "The 'name' query parameter is required")
        group = next((g for g in self.groups.values() if g.name == name), None)
        if group is None:
            raise _HttpError(404, f"No group found with name : {name}")
        members = [self._user_v1(self.users[m]) for m in group.members if m in self.users]
        return self._offset_page(request, members, "/rest/api/group/member")

    def _v1_search(self, request: Request) -> Response:
        cql = request.args.get("cql") or ""
        expand = set(filter(None, (request.args.get("expand") or "").split(",")))
        limit = max(1, min(int(request.args.get("limit", 25)), self.search_limit_cap))
        offset = _decode_cursor(request.args.get("cursor"))
        types, keys, space_type, since = self._parse_cql(cql)
        if self._empty_search_pages > 0:
            self._empty_search_pages -= 1
            return _json(self._search_page(request, [], offset, limit, has_next=True))
        items: list[tuple[datetime, str, FakeContent | FakeAttachment]] = []
        for content in self.contents.values():
            if (
                "page" in types
                and content.type == "page"
                and (content.status == "current" or content.linger)
            ):
                items.append((content.modified_at, content.id, content))
        if "attachment" in types:
            for att in self.attachments.values():
                page = self.contents.get(att.page_id)
                live = att.status == "current" and page is not None and page.status == "current"
                if live or att.linger:
                    items.append((att.modified_at, att.id, att))
        selected = []
        for when, _, item in sorted(items, key=lambda t: (t[0], t[1])):
            space = self.spaces[self._space_key(item)]
            if keys is not None and space.key not in keys:
                continue
            if space_type is not None and space.type != space_type:
                continue
            if when < since:
                continue
            selected.append(item)
        chunk = selected[offset : offset + limit]
        if any(
            p in expand
            for p in (
                "ancestors.restrictions.read.restrictions.user",
                "ancestors.restrictions.read.restrictions.group",
            )
        ):
            for item in chunk:
                if isinstance(item, FakeContent):
                    for ancestor in self._ancestors(item):
                        if ancestor.status in ("draft", "trashed"):
                            body = payload("error_404_confcloud_77618.json")
                            body["message"] = body["message"].replace("{id}", ancestor.id)
                            return _json(body, 404)
        results = [self._content_v1(item, expand) for item in chunk]
        return _json(
            self._search_page(
                request, results, offset, limit, has_next=offset + limit < len(selected)
            )
        )

    def _search_page(
        self,
        request: Request,
        results: list[dict[str, Any]],
        offset: int,
        limit: int,
        *,
        has_next: bool,
    ) -> dict[str, Any]:
        links: dict[str, str] = {
            "base": self.wiki_url,
            "context": "/wiki",
            "self": f"{self.wiki_url}/rest/api/content/search",
        }
        if has_next:
            params = {
                k: v
                for k, v in request.args.to_dict().items()
                if k not in ("cursor", "next", "start")
            }
            params.update(
                next="true", cursor=_encode_cursor(offset + limit), start=str(offset + limit)
            )
            links["next"] = f"/rest/api/content/search?{urlencode(params, quote_via=quote)}"
        return {
            "results": results,
            "start": offset,
            "limit": limit,
            "size": len(results),
            "totalSize": None,
            "cqlQuery": request.args.get("cql"),
            "searchDuration": 12,
            "_links": links,
        }

    def _parse_cql(self, cql: str) -> tuple[set[str], set[str] | None, str | None, datetime]:
        if self._invalid_dates > 0 and _CQL_SINCE.search(cql):
            self._invalid_dates -= 1
            raise _HttpError(400, payload("error_400_cql_date.json")["message"])
        rest = cql
        types_match = _CQL_TYPES.search(rest)
        if not types_match:
            raise _HttpError(400, f"Could not parse cql : {cql} (fake needs a type clause)")
        types = {
            t.strip().strip("'\"")
            for t in (types_match.group(1) or types_match.group(2)).split(",")
        }
        rest = rest.replace(types_match.group(0), "")
        keys: set[str] | None = None
        space_type: str | None = None
        type_match = _CQL_SPACE_TYPE.search(rest)
        if type_match:
            space_type = type_match.group(1)
            rest = rest.replace(type_match.group(0), "")
        else:
            space_match = _CQL_SPACES.search(rest)
            if space_match:
                raw = space_match.group(1) or space_match.group(2)
                keys = {k.strip().strip("'\"") for k in raw.split(",")}
                rest = rest.replace(space_match.group(0), "")
        since_match = _CQL_SINCE.search(rest)
        since = datetime.min.replace(tzinfo=UTC)
        if since_match:
            try:
                local = datetime.strptime(since_match.group(1), "%Y-%m-%d %H:%M")
            except ValueError as exc:
                raise _HttpError(400, payload("error_400_cql_date.json")["message"]) from exc
            since = (local - timedelta(minutes=self.tz_offset_minutes)).replace(tzinfo=UTC)
            rest = rest.replace(since_match.group(0), "")
        order = _CQL_ORDER.search(rest)
        if order:
            rest = rest[: order.start()]
        leftover = re.sub(r"\band\b", "", rest, flags=re.I).strip()
        if leftover:
            raise _HttpError(400, f"Could not parse cql : {cql} (unexpected {leftover!r})")
        return types, keys, space_type, since

    # -- rendering ---------------------------------------------------------------------------

    def _space_key(self, item: FakeContent | FakeAttachment) -> str:
        if isinstance(item, FakeAttachment):
            return self.contents[item.page_id].space_key
        return item.space_key

    def _ancestors(self, content: FakeContent) -> list[FakeContent]:
        chain = []
        current = content
        while current.parent_id and current.parent_id in self.contents:
            current = self.contents[current.parent_id]
            chain.append(current)
        return chain[::-1]

    def _webui(self, content: FakeContent) -> str:
        slug = quote(content.title.replace(" ", "+"), safe="+")
        return f"/spaces/{content.space_key}/pages/{content.id}/{slug}"

    def _space_json(self, space: FakeSpace) -> dict[str, Any]:
        return {
            "id": space.id,
            "key": space.key,
            "name": space.name,
            "type": space.type,
            "status": "current",
            "authorId": "u-svc",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "homepageId": space.homepage_id,
            "description": None,
            "icon": None,
            "_links": {"webui": f"/spaces/{space.key}"},
        }

    def _page_v2(self, content: FakeContent, *, body: bool) -> dict[str, Any]:
        parent = self.contents.get(content.parent_id or "")
        data: dict[str, Any] = {
            "id": content.id,
            "type": content.type,
            "status": "current" if content.linger else content.status,
            "title": content.title,
            "spaceId": self.spaces[content.space_key].id,
            "parentId": content.parent_id,
            "parentType": parent.type if parent else None,
            "position": int(content.id) % 1000,
            "authorId": content.author_id,
            "ownerId": content.author_id,
            "lastOwnerId": None,
            "createdAt": iso(content.created_at),
            "version": {
                "createdAt": iso(content.modified_at),
                "message": "",
                "number": content.version,
                "minorEdit": False,
                "authorId": content.author_id,
            },
            "body": {"storage": {"representation": "storage", "value": content.body}}
            if body
            else {},
            "_links": {
                "webui": self._webui(content),
                "editui": f"/pages/resumedraft.action?draftId={content.id}",
                "tinyui": f"/x/{content.id}",
            },
        }
        if content.type == "folder":
            del data["body"]
        return data

    def _attachment_v2(self, att: FakeAttachment) -> dict[str, Any]:
        page = self.contents[att.page_id]
        download = (
            f"/download/attachments/{att.page_id}/{quote(att.title)}"
            f"?version={att.version}&modificationDate={int(att.modified_at.timestamp() * 1000)}"
            "&cacheVersion=1&api=v2"
        )
        webui = f"{self._webui(page)}?preview=%2F{att.page_id}%2F{att.id}%2F{quote(att.title)}"
        return {
            "id": att.id,
            "status": att.status,
            "title": att.title,
            "createdAt": iso(att.created_at),
            "pageId": att.page_id,
            "blogPostId": None,
            "customContentId": None,
            "mediaType": att.media_type,
            "mediaTypeDescription": att.media_type,
            "comment": "",
            "fileId": f"file-{att.id}",
            "fileSize": len(att.data),
            "webuiLink": webui,
            "downloadLink": download,
            "version": {
                "createdAt": iso(att.modified_at),
                "message": "",
                "number": att.version,
                "minorEdit": False,
                "authorId": att.author_id,
            },
            "_links": {"webui": webui, "download": download},
        }

    def _user_v1(self, user: FakeUser) -> dict[str, Any]:
        return {
            "type": "known",
            "accountId": user.account_id,
            "accountType": "atlassian",
            "email": user.email or "",
            "publicName": user.name,
            "displayName": user.name,
            "profilePicture": {
                "path": "/wiki/aa-avatar/default.png",
                "width": 48,
                "height": 48,
                "isDefault": True,
            },
            "isExternalCollaborator": False,
            "_links": {"self": f"{self.wiki_url}/rest/api/user?accountId={user.account_id}"},
        }

    def _group_v1(self, group: FakeGroup) -> dict[str, Any]:
        return {
            "type": "group",
            "name": group.name,
            "id": group.id,
            "_links": {"self": f"{self.wiki_url}/rest/api/group/by-id?id={group.id}"},
        }

    def _restriction_v1(self, content: FakeContent) -> dict[str, Any]:
        users = [self._user_v1(self.users[u]) for u in content.read_users if u in self.users]
        groups = [self._group_v1(self.groups[g]) for g in content.read_groups if g in self.groups]
        users += [e for k, e in content.raw_read if k == "user"]
        groups += [e for k, e in content.raw_read if k == "group"]
        return {
            "operation": "read",
            "restrictions": {
                "user": {"results": users, "start": 0, "limit": 200, "size": len(users)},
                "group": {"results": groups, "start": 0, "limit": 200, "size": len(groups)},
            },
            "_expandable": {"content": f"/rest/api/content/{content.id}"},
            "_links": {
                "self": f"{self.wiki_url}/rest/api/content/{content.id}"
                "/restriction/byOperation/read",
                "base": self.wiki_url,
                "context": "/wiki",
            },
        }

    def _content_v1(self, item: FakeContent | FakeAttachment, expand: set[str]) -> dict[str, Any]:
        space = self.spaces[self._space_key(item)]
        user = self.users.get(item.author_id) or FakeUser(item.author_id, item.author_id, None)
        data: dict[str, Any] = {
            "id": item.id,
            "type": "attachment" if isinstance(item, FakeAttachment) else item.type,
            "status": "current" if getattr(item, "linger", False) else item.status,
            "title": item.title,
            "_expandable": {},
        }
        if "space" in expand:
            data["space"] = {
                "id": int(space.id),
                "key": space.key,
                "name": space.name,
                "type": space.type,
                "status": "current",
                "_links": {"webui": f"/spaces/{space.key}"},
            }
        if "version" in expand:
            data["version"] = {
                "by": self._user_v1(user),
                "when": iso(item.modified_at),
                "friendlyWhen": "just now",
                "message": "",
                "number": item.version,
                "minorEdit": False,
                "contentTypeModified": False,
            }
        if "history.lastUpdated" in expand:
            data["history"] = {
                "latest": True,
                "createdDate": iso(item.created_at),
                "lastUpdated": {"when": iso(item.modified_at), "number": item.version},
            }
        if isinstance(item, FakeAttachment):
            page = self.contents[item.page_id]
            v2 = self._attachment_v2(item)
            data["metadata"] = {"mediaType": item.media_type, "comment": ""}
            data["extensions"] = {
                "mediaType": item.media_type,
                "fileSize": len(item.data),
                "comment": "",
            }
            if "container" in expand:
                data["container"] = {
                    "id": page.id,
                    "type": "page",
                    "status": page.status,
                    "title": page.title,
                }
            data["_links"] = {
                "webui": v2["webuiLink"],
                "download": v2["downloadLink"],
                "self": f"{self.wiki_url}/rest/api/content/{item.id}",
            }
            return data
        if "ancestors" in expand:
            ancestors = []
            for ancestor in self._ancestors(item):
                entry: dict[str, Any] = {
                    "id": ancestor.id,
                    "type": ancestor.type,
                    "status": ancestor.status,
                    "title": ancestor.title,
                }
                if "ancestors.restrictions.read.restrictions.user" in expand:
                    entry["restrictions"] = {"read": self._restriction_v1(ancestor)}
                ancestors.append(entry)
            data["ancestors"] = ancestors
        if "body.storage" in expand:
            data["body"] = {"storage": {"value": item.body, "representation": "storage"}}
        if "restrictions.read.restrictions.user" in expand:
            data["restrictions"] = {"read": self._restriction_v1(item)}
        data["_links"] = {
            "webui": self._webui(item),
            "tinyui": f"/x/{item.id}",
            "self": f"{self.wiki_url}/rest/api/content/{item.id}",
        }
        return data


# Required query parameters, checked first (as the site does).
_REQUIRED = {r"/rest/api/group/member": ("name",), r"/rest/api/user": ("accountId",)}
_V2_CODES = {400: "INVALID_REQUEST_PARAMETER", 404: "NOT_FOUND"}


class _HttpError(Exception):
    """An error in the vendor's shape: v2 ``{"errors": [...]}``, v1 ``{"statusCode", ...}``."""

    def __init__(self, status: int, message: str, *, v2: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = self.body_for(v2 or "")

    def body_for(self, path: str) -> dict[str, Any]:
        status, message = self.status, self.message
        if path.startswith(("/api/v2", "/wiki/api/v2")):
            return {
                "errors": [
                    {
                        "status": status,
                        "code": _V2_CODES.get(status, "ERROR"),
                        "title": message,
                        "detail": None,
                    }
                ]
            }
        return {
            "statusCode": status,
            "data": {"authorized": True, "valid": False, "errors": [], "successful": False},
            "message": message,
        }


def _json(
    data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(data), status, headers=headers or {}, content_type="application/json"
    )


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return int(base64.urlsafe_b64decode(padded).decode().split(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise _HttpError(400, "Invalid cursor") from exc


def make_source_config(
    fake: FakeConfluence,
    name: str = "wiki",
    *,
    token_file: Path | None = None,
    **confluence: Any,
) -> dict[str, Any]:
    """The ``sources:`` entry for ``trove.yaml`` that reads from ``fake``.

    The token comes from the environment variable :data:`TOKEN_ENV` (set it to
    ``fake.token``), or from ``token_file`` when given (the file is written).
    Extra keyword arguments go into the ``confluence:`` block (``spaces``,
    ``include_attachments``, ``overlap_minutes``, ...).
    """
    if token_file is not None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(fake.token + "\n", encoding="utf-8")
        secret: dict[str, str] = {"file": str(token_file)}
    else:
        secret = {"env": TOKEN_ENV}
    block: dict[str, Any] = {"url": fake.wiki_url, "email": fake.email, "api_token": secret}
    block.update(confluence)
    return {
        "name": name,
        "type": "confluence",
        "confluence": block,
        # Fast retries against a loopback fake; Retry-After is still honoured.
        "retry": {"max_attempts": 4, "base_delay_s": 0.01, "max_delay_s": 60, "max_total_s": 300},
    }


def unreachable_source_config(token_env: str, name: str = "wiki") -> dict[str, Any]:
    """A Confluence ``sources:`` entry that nothing answers (port 9) and whose token
    comes from ``token_env``: for tests that must not, or cannot, reach the site."""
    return {
        "name": name,
        "type": "confluence",
        "confluence": {
            "url": "http://127.0.0.1:9/wiki",
            "email": "bot@acme.com",
            "api_token": {"env": token_env},
        },
    }


def principal_for(snapshot: GroupSnapshot, email: str) -> Principal:
    """The query-time identity of the person signing in with ``email``, resolved like the
    group directory does: their e-mail, their user token, every group holding either,
    and the site token when the snapshot lists them."""
    email = email.strip().lower()
    tokens = {u.token for u in snapshot.users if email in u.identities}
    identities = {email} | tokens
    groups = {g for g, members in snapshot.members.items() if members & identities}
    if tokens and snapshot.tenant_token:  # a listed user holds the site token
        groups.add(snapshot.tenant_token)
    return Principal.of(email, groups | tokens)
