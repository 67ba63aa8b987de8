"""HTTP for Confluence Cloud: both REST surfaces, paging, and errors that never carry secrets.

Confluence Cloud needs two APIs (reference §1): v2 (``/wiki/api/v2``, cursor paging)
for spaces, pages, folders and attachments, and v1 (``/wiki/rest/api``) for CQL
search, read restrictions, users and groups, which have no v2 equivalent.

* Auth is HTTP Basic ``email:api_token``; the token is read once from its
  :class:`~connectors.credentials.Secret` and lives only inside the
  ``httpx.BasicAuth`` object. Messages carry the method, the path (no query
  string) and the server's message, never a header.
* Every request goes through :class:`~connectors.http.HttpClient`: 429/503 (and
  Confluence's overload 403) with ``Retry-After`` are waited out, 5xx backed off,
  and a source that keeps failing raises ``SourceUnavailable``; 401/403 raise
  ``SourceAuthError``. 404 becomes :class:`NotFound` (the caller decides whether
  that means "deleted"); other 4xx become :class:`ConfluenceRequestError`.
* ``_links.next`` is followed verbatim, but only its path and query: v2 links
  are site-relative (``/wiki/api/v2/...``), v1 links are relative to the wiki
  root (``/rest/api/...``), and an absolute link to another host is re-rooted on
  the configured site so the credentials are never sent elsewhere. A page with
  no results ends the listing even when it carries ``next`` (Onyx saw cursors
  that loop on empty pages).
* Attachment downloads follow redirects; httpx drops the ``Authorization``
  header when a redirect leaves the site (Atlassian's media CDN needs none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx

from connectors.common import parse_http_date, redact_url
from connectors.confluence.config import ConfluenceConfig
from connectors.errors import ConnectorError, DocumentGone
from connectors.http import HttpClient, RequestFailed, SourceUnavailable, json_object
from connectors.http import NotFound as HttpNotFound
from core.retry import RetryPolicy

log = logging.getLogger(__name__)

V2 = "/api/v2"
V1 = "/rest/api"

# v2 resource collections by content type, for parents that are not pages.
_V2_COLLECTIONS = {
    "page": "pages",
    "folder": "folders",
    "whiteboard": "whiteboards",
    "database": "databases",
    "embed": "embeds",
    "blogpost": "blogposts",
}


class ConfluenceRequestError(RequestFailed):
    """Confluence refused a request with a 4xx other than 401/403 (``detail``: its message)."""

    def __init__(self, message: str, status: int, detail: str = "") -> None:
        super().__init__(message, status)
        self.detail = detail


class NotFound(ConfluenceRequestError, HttpNotFound):
    """404: the content is gone (purged, trashed, or never visible to the API user)."""


class DocumentNotFound(DocumentGone):
    """``fetch`` asked for a document that no longer exists: the pipeline should delete it."""


def _message(response: httpx.Response) -> str:
    """The server's own error message, shortened; Confluence puts it in ``message``."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        msg = data.get("message") or data.get("errorMessage") or ""
        if not msg and isinstance(data.get("errors"), list) and data["errors"]:
            first = data["errors"][0]
            msg = first.get("title") or first.get("detail") or "" if isinstance(first, dict) else ""
        return str(msg)[:300]
    return str(data)[:300]


def server_time(response: httpx.Response) -> datetime | None:
    """The server's clock from the ``Date`` header (first one, if a proxy added another)."""
    for value in response.headers.get_list("date"):
        when = parse_http_date(value)
        if when is not None:
            return when
    return None


class ConfluenceClient:
    """Raw JSON reads from one Confluence Cloud site.

    :param config: the source's ``confluence:`` block (site URL, e-mail, token).
    :param policy: retry budget for every request.
    :param http: an ``httpx.Client`` to use (tests); one is created otherwise.
    :param sleep: how to wait between retries (tests pass a recorder).
    :raises ConnectorError: when the API token cannot be read.
    """

    def __init__(
        self,
        config: ConfluenceConfig,
        *,
        policy: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.wiki = config.url.rstrip("/")
        parts = urlsplit(self.wiki)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConnectorError(
                f"confluence url must be the site's wiki root, e.g. "
                f"https://acme.atlassian.net/wiki (got {config.url!r})"
            )
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.wiki_path = parts.path.rstrip("/")  # "/wiki" on Atlassian Cloud
        self._auth = httpx.BasicAuth(config.email, config.api_token.read())
        client = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self.http = HttpClient(client, policy, sleep=sleep)
        self.last_server_time: datetime | None = None

    # -- plumbing -----------------------------------------------------------------

    def url(self, link: str) -> str:
        """An absolute URL on this site for a path, a v1/v2 ``_links`` value or a download link."""
        if link.startswith(("http://", "https://")):
            parts = urlsplit(link)
            link = urlunsplit(("", "", parts.path, parts.query, ""))
        if not link.startswith("/"):
            link = "/" + link
        if self.wiki_path and (link == self.wiki_path or link.startswith(self.wiki_path + "/")):
            return self.origin + link
        return self.wiki + link

    def request(
        self,
        link: str,
        params: dict[str, Any] | None = None,
        *,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """GET with retries; 404: :class:`NotFound`; other 4xx: :class:`ConfluenceRequestError`."""
        url = self.url(link)
        response = self.http.get(
            url,
            params=params,
            auth=self._auth,
            headers={"Accept": "application/json"},
            follow_redirects=follow_redirects,
        )
        when = server_time(response)
        if when is not None:
            self.last_server_time = when
        if response.status_code >= 400:
            path = urlsplit(url).path
            detail = _message(response)
            cls = NotFound if response.status_code == 404 else ConfluenceRequestError
            raise cls(
                f"GET {path} answered {response.status_code}: {detail or 'no message'}",
                response.status_code,
                detail,
            )
        if response.status_code >= 300:
            raise SourceUnavailable(
                f"GET {urlsplit(url).path} answered {response.status_code} without content"
            )
        return response

    def get_json(self, link: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.request(link, params)
        return json_object(response, f"GET {urlsplit(self.url(link)).path}")

    def pages_of(
        self, link: str, params: dict[str, Any] | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Each page of a ``_links.next`` listing as ``(results, next link or None)``.

        ``link`` may itself be a ``next`` link saved in a cursor (then ``params`` is None).
        """
        data = self.get_json(link, params)
        while True:
            results = [r for r in data.get("results") or [] if isinstance(r, dict)]
            nxt = (data.get("_links") or {}).get("next")
            if not results:
                if nxt:
                    log.info(
                        "confluence: empty page with a next link at %s; stopping", redact_url(link)
                    )
                yield [], None
                return
            yield results, nxt or None
            if not nxt:
                return
            link = nxt
            data = self.get_json(link)

    def all_of(self, link: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        for results, _ in self.pages_of(link, params):
            yield from results

    def offset_pages(
        self, link: str, params: dict[str, Any] | None = None, limit: int = 200
    ) -> Iterator[dict[str, Any]]:
        """v1 ``start``/``limit`` paging (groups, group members)."""
        start = 0
        while True:
            data = self.get_json(link, {**(params or {}), "start": start, "limit": limit})
            results = [r for r in data.get("results") or [] if isinstance(r, dict)]
            yield from results
            if not results:
                return
            start += len(results)
            size = data.get("size")
            has_next = bool((data.get("_links") or {}).get("next"))
            if not has_next and (not isinstance(size, int) or size < limit):
                return

    # -- v2 -----------------------------------------------------------------------

    def spaces(self, keys: list[str], limit: int) -> Iterator[dict[str, Any]]:
        """Current spaces (every type: ``type`` takes one value only, CONFCLOUD-78652);
        the caller leaves out personal spaces."""
        params: dict[str, Any] = {"limit": limit, "status": "current"}
        if keys:
            params["keys"] = ",".join(keys)
        return self.all_of(f"{V2}/spaces", params)

    def space(self, space_id: str) -> dict[str, Any]:
        return self.get_json(f"{V2}/spaces/{space_id}")

    def space_permissions(self, space_id: str) -> Iterator[dict[str, Any]]:
        return self.all_of(f"{V2}/spaces/{space_id}/permissions", {"limit": 250})

    def space_pages(
        self, space_id: str, limit: int, *, body: bool, resume: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        if resume:
            return self.pages_of(resume)
        params: dict[str, Any] = {"limit": limit, "status": "current"}
        if body:
            params["body-format"] = "storage"
        return self.pages_of(f"{V2}/spaces/{space_id}/pages", params)

    def page(self, page_id: str, *, body: bool) -> dict[str, Any]:
        return self.get_json(f"{V2}/pages/{page_id}", {"body-format": "storage"} if body else None)

    def node(self, node_id: str, node_type: str) -> dict[str, Any]:
        """A page, folder or other container by id (v2), for ancestor titles and parents."""
        collection = _V2_COLLECTIONS.get(node_type)
        if collection is None:
            raise NotFound(f"no v2 endpoint for content type {node_type!r}", 404)
        return self.get_json(f"{V2}/{collection}/{node_id}")

    def page_any_status(self, page_id: str) -> dict[str, Any]:
        """A page in whatever state (a draft or trashed ancestor), for its title only."""
        statuses = ["current", "archived", "draft", "trashed"]
        return self.get_json(f"{V2}/pages/{page_id}", {"status": statuses})

    def page_ancestors(self, page_id: str) -> list[dict[str, Any]]:
        """v2 ``/pages/{id}/ancestors``: ``[{id, type}]`` top-down (the highest first)."""
        return list(self.all_of(f"{V2}/pages/{page_id}/ancestors", {"limit": 250}))

    def page_attachments(self, page_id: str, limit: int) -> Iterator[dict[str, Any]]:
        return self.all_of(f"{V2}/pages/{page_id}/attachments", {"limit": limit})

    def attachment(self, attachment_id: str) -> dict[str, Any]:
        return self.get_json(f"{V2}/attachments/{attachment_id}")

    def download(self, link: str) -> bytes:
        """An attachment's bytes from its ``downloadLink`` (relative to the wiki root)."""
        return self.request(link, follow_redirects=True).content

    # -- v1 -----------------------------------------------------------------------

    def read_restrictions(self, content_id: str) -> dict[str, Any]:
        return self.get_json(
            f"{V1}/content/{content_id}/restriction/byOperation/read",
            {"expand": "restrictions.user,restrictions.group"},
        )

    def search(
        self, cql: str, expand: str, limit: int, *, next_link: str | None = None
    ) -> dict[str, Any]:
        """One page of ``/content/search`` (the first, or the one ``next_link`` names)."""
        if next_link:
            return self.get_json(next_link)
        return self.get_json(f"{V1}/content/search", {"cql": cql, "limit": limit, "expand": expand})

    def user(self, account_id: str) -> dict[str, Any]:
        return self.get_json(f"{V1}/user", {"accountId": account_id})

    def groups(self) -> Iterator[dict[str, Any]]:
        return self.offset_pages(f"{V1}/group")

    def group_members(self, group_id: str) -> Iterator[dict[str, Any]]:
        # By id (``/group/{groupId}/membersByGroupId``, limit <= 200): the older
        # ``/group/member`` takes a required ``name``, is deprecated, and answers
        # 400 to ``?id=`` (reference §6).
        return self.offset_pages(f"{V1}/group/{quote(group_id, safe='')}/membersByGroupId")

    def close(self) -> None:
        self.http.close()


def replace_query_param(link: str, name: str, value: str) -> str:
    """``link`` with one query parameter replaced (used to shrink a CQL ``expand``)."""
    parts = urlsplit(link)
    query = [
        (k, value if k == name else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
