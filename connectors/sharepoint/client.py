"""Microsoft Graph v1.0 and SharePoint REST over :class:`~connectors.http.HttpClient`.

What this layer guarantees, so the connector can stay about mapping:

* Every call carries a bearer token for the resource it talks to (Graph, or
  the site's SharePoint host for ``/_api``) and goes through ``HttpClient``, so
  429/503 ``Retry-After`` (seconds or HTTP-date) and backoff are honoured with
  a bounded total.
* Links from responses (``@odata.nextLink``, ``@odata.deltaLink``) are followed
  verbatim but only on the Graph origin: a bearer token is never sent to a
  host that a response (or a tampered cursor) names.
* ``410 Gone`` on a delta link is :class:`DeltaExpired` (the caller re-enumerates).
* Content: ``/content`` answers ``302`` to a pre-authenticated URL that is
  fetched **without** the ``Authorization`` header (sending it makes SharePoint
  refuse, and would hand the Graph token to the download host).
* Item permissions are read through JSON batching (``POST /$batch``, at most 20
  requests); each sub-response has its own status and ``Retry-After``, so
  throttled or failing sub-requests are retried here with the same policy
  (bounded attempts and total wait) and whatever still fails is returned to the
  caller as a status, to become a per-document failure.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from connectors.common import redact_url
from connectors.errors import ConnectorError, DocumentGone
from connectors.http import (
    RETRY_STATUSES,
    HttpClient,
    RequestFailed,
    SourceAuthError,
    json_object,
    server_wait_seconds,
)
from connectors.http import NotFound as HttpNotFound
from connectors.sharepoint.auth import TokenProvider, resource_scope
from connectors.sharepoint.config import is_secure_url
from core.retry import RetryBudget

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BATCH_LIMIT = 20


class GraphError(RequestFailed):
    """A Graph or SharePoint call answered an error the retries could not clear."""


class NotFound(GraphError, HttpNotFound, DocumentGone):
    """404: the item, group or site no longer exists (or is not visible to the app)."""


class DeltaExpired(ConnectorError):
    """410 Gone on a delta or next link: the drive must be enumerated again."""

    def __init__(self, drive_id: str) -> None:
        super().__init__(f"delta token of drive {drive_id} expired (410 Gone)")
        self.drive_id = drive_id


@dataclass(frozen=True)
class SubResponse:
    """One sub-response of a JSON batch."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _error_text(response: httpx.Response) -> str:
    """Graph's ``error.code: message`` (never request headers), or the bare status."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        message = error.get("message")
        if isinstance(message, dict):  # SharePoint REST verbose: {"lang":..., "value":...}
            message = message.get("value")
        return f"{error.get('code') or 'error'}: {str(message or '')[:300]}"
    return f"status {response.status_code}"


class GraphClient:
    """Authenticated Graph (``graph_url``) and SharePoint REST calls with Graph's paging."""

    def __init__(
        self,
        http: HttpClient,
        graph_url: str,
        tokens: TokenProvider,
        *,
        sleep: Callable[[float], None],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self.base = graph_url.rstrip("/")
        parts = urlsplit(self.base)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.scope = resource_scope(self.base)
        self._tokens = tokens
        self._sleep = sleep
        self._rand = rand

    # -- plumbing -----------------------------------------------------------------

    def url(self, path_or_url: str) -> str:
        """An absolute Graph URL; links off the Graph origin are refused."""
        if path_or_url.startswith(("http://", "https://")):
            if not (path_or_url == self.origin or path_or_url.startswith(self.origin + "/")):
                raise ConnectorError(
                    f"refusing to follow a link off the Graph host: {redact_url(path_or_url)}"
                )
            return path_or_url
        return f"{self.base}/{path_or_url.lstrip('/')}"

    def owns(self, url: str) -> bool:
        return url.startswith(self.origin + "/")

    def _auth(self, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens(scope or self.scope)}"}

    def get(self, path_or_url: str, params: dict[str, Any] | None = None) -> httpx.Response:
        headers = {**self._auth(), "Accept": "application/json"}
        return self.http.request("GET", self.url(path_or_url), params=params, headers=headers)

    def get_json(self, path_or_url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.get(path_or_url, params)
        return self._json(response, path_or_url)

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code == 404:
            raise NotFound(f"{redact_url(what)} not found ({_error_text(response)})", 404)
        if response.status_code >= 300:
            raise GraphError(
                f"GET {redact_url(what)} failed with {response.status_code} "
                f"({_error_text(response)})",
                response.status_code,
            )
        return json_object(response, f"GET {redact_url(what)}")

    def pages(
        self, path_or_url: str, params: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Each page of a collection, following ``@odata.nextLink`` verbatim."""
        page = self.get_json(path_or_url, params)
        while True:
            yield page
            link = page.get("@odata.nextLink")
            if not link:
                return
            page = self.get_json(link)

    def values(
        self, path_or_url: str, params: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        for page in self.pages(path_or_url, params):
            yield from page.get("value") or []

    # -- drives ------------------------------------------------------------------

    def delta_page(
        self, drive_id: str, url: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One page of ``driveItem: delta``; :class:`DeltaExpired` on 410."""
        response = self.get(url, params)
        if response.status_code == 410:
            raise DeltaExpired(drive_id)
        return self._json(response, url)

    def download(self, drive_id: str, item_id: str) -> bytes:
        """The item's bytes: ``/content`` answers 302 to a pre-authenticated URL, fetched bare."""
        what = f"/drives/{drive_id}/items/{item_id}/content"
        response = self.http.request(
            "GET", self.url(what), headers=self._auth(), follow_redirects=False
        )
        hops = 0
        while response.status_code in _REDIRECTS:
            hops += 1
            location = response.headers.get("Location")
            if not location or hops > 5:
                raise GraphError(f"GET {what}: redirect without a usable Location", 502)
            target = urljoin(str(response.url), location)
            if not is_secure_url(target):
                raise GraphError(f"GET {what}: refusing a download over plain http", 502)
            # The pre-authenticated URL carries its own credential: no Authorization header.
            response = self.http.request("GET", target, follow_redirects=False)
        if response.status_code == 404:
            raise NotFound(f"{what} not found", 404)
        if response.status_code != 200:
            raise GraphError(
                f"download of {what} failed with {response.status_code} ({_error_text(response)})",
                response.status_code,
            )
        return response.content

    # -- batching ----------------------------------------------------------------

    def get_many(self, paths: list[str], batch_size: int = _BATCH_LIMIT) -> dict[str, SubResponse]:
        """GET each relative path through ``POST /$batch``, retrying throttled sub-requests.

        Returns the final sub-response per path; statuses the retries could not
        clear (429, 5xx) are returned, not raised, so one bad item fails alone.
        """
        size = max(1, min(batch_size, _BATCH_LIMIT))
        budget = RetryBudget(self.http.policy, self._rand)
        results: dict[str, SubResponse] = {}
        pending = list(dict.fromkeys(paths))
        waited = 0.0
        while pending:
            throttled_for: list[float] = []
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                for path, (sub, retry_after) in zip(chunk, self._batch(chunk), strict=True):
                    results[path] = sub
                    if sub.status in RETRY_STATUSES and retry_after is not None:
                        throttled_for.append(retry_after)
            pending = [p for p in pending if results[p].status in RETRY_STATUSES]
            if not pending:
                break
            # The server's wait is honoured in full (core.retry); only our backoff is capped.
            wait = budget.after_failure(waited, max(throttled_for) if throttled_for else None)
            delay = wait.delay_s
            if wait.give_up:
                self.http.budget_exhausted = True
                log.warning(
                    "giving up on %d batched request(s) after %d attempts: the retry budget "
                    "ran out (the server asked to wait %.0fs more)",
                    len(pending),
                    budget.failures,
                    delay,
                )
                break
            log.info("retrying %d batched request(s) in %.1fs", len(pending), delay)
            self.http.retries += 1
            self.http.waited_s += delay
            waited += delay
            self._sleep(delay)
        return results

    def _batch(self, chunk: list[str]) -> list[tuple[SubResponse, float | None]]:
        body = {
            "requests": [
                {"id": str(n), "method": "GET", "url": "/" + path.lstrip("/")}
                for n, path in enumerate(chunk)
            ]
        }
        response = self.http.request(
            "POST",
            self.url("/$batch"),
            json=body,
            headers={**self._auth(), "Accept": "application/json"},
        )
        if response.status_code != 200:
            raise GraphError(
                f"POST /$batch failed with {response.status_code} ({_error_text(response)})",
                response.status_code,
            )
        by_id: dict[str, tuple[SubResponse, float | None]] = {}
        for sub in response.json().get("responses") or []:
            sub_headers = {str(k).lower(): str(v) for k, v in (sub.get("headers") or {}).items()}
            payload = sub.get("body")
            by_id[str(sub.get("id"))] = (
                SubResponse(
                    int(sub.get("status") or 0), payload if isinstance(payload, dict) else {}
                ),
                server_wait_seconds(sub_headers),
            )
        # A sub-request the batch did not answer counts as a server error (retried).
        return [by_id.get(str(n), (SubResponse(500), None)) for n in range(len(chunk))]

    # -- SharePoint REST ---------------------------------------------------------

    def site_group_users(self, site_url: str, number: int | str) -> list[dict[str, Any]]:
        """``{site}/_api/web/sitegroups/getbyid(n)/users``.

        Returns ``[{Id, LoginName, Title, Email, PrincipalType}]``.
        """
        site_url = site_url.rstrip("/")
        if not is_secure_url(site_url):
            raise ConnectorError(f"site URL {site_url!r} is not https: site group not read")
        url: str | None = f"{site_url}/_api/web/sitegroups/getbyid({int(number)})/users"
        scope = resource_scope(site_url)
        users: list[dict[str, Any]] = []
        while url:
            try:
                response = self.http.request(
                    "GET",
                    url,
                    headers={**self._auth(scope), "Accept": "application/json;odata=nometadata"},
                )
            except SourceAuthError:
                raise SourceAuthError(
                    f"SharePoint REST refused the app-only token for {site_url}: reading site "
                    "groups needs a certificate credential (`client_certificate`) and "
                    "Sites.Read.All on SharePoint, or set `site_groups: false`"
                ) from None
            if response.status_code == 404:
                raise NotFound(f"site group {number} of {site_url} not found", 404)
            body = self._json(response, url)
            verbose = body.get("d")  # odata=verbose wraps the payload in "d"
            data: dict[str, Any] = verbose if isinstance(verbose, dict) else body
            users.extend(data.get("value") or data.get("results") or [])
            link = data.get("odata.nextLink") or data.get("__next")
            url = link if link and link.startswith(site_url + "/") else None
        return users
