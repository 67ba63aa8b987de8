"""One GET as the crawler needs it: guarded, redirect by redirect, with a body cap.

* Redirects are followed here, not by httpx, so that every hop — of a page,
  robots.txt or a sitemap alike — is on an allowed host, passes the SSRF guard
  and the caller's ``follow`` test (scope, robots.txt) before it is requested.
  At most ``max_redirects`` hops (5, as RFC 9309 asks for robots.txt); a
  refused hop is returned as the 3xx response itself.
* Conditional headers come from ``validators(url)`` for *each* hop, because
  validators belong to the URL that served them (the redirect target).
* Retries, ``Retry-After`` and backoff are :class:`~connectors.http.HttpClient`'s;
  a 401/403 arrives as :class:`~connectors.http.SourceAuthError`, a failure past
  the retry budget as :class:`~connectors.http.SourceUnavailable`.
* The body is capped while it streams in (an httpx response hook wraps the
  stream), so a hostile server cannot make the crawler buffer gigabytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from connectors.errors import ConnectorError
from connectors.http import HttpClient
from connectors.web.guard import AddressGuard
from connectors.web.urls import host_of, normalise
from core.errors import TroveError

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class FetchError(ConnectorError):
    """A page could not be fetched for a reason that retrying will not fix."""


class TooManyRedirects(FetchError):
    """More redirect hops than allowed."""


class OffHost(FetchError):
    """The URL is not on one of the crawl's allowed hosts: it is never requested."""


class BodyTooLarge(TroveError):
    """Raised from inside the response stream once the cap is passed (not an httpx error,
    so the HTTP client does not retry it)."""


@dataclass(frozen=True)
class Fetched:
    url: str  # the URL that answered (after redirects)
    status: int
    headers: httpx.Headers
    body: bytes
    hops: tuple[str, ...] = field(default_factory=tuple)  # URLs that redirected, in order
    refused_redirect: str | None = None  # a redirect target ``follow`` said no to

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"').lower()
        return None


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise BodyTooLarge(f"body larger than {self._limit} bytes")
            yield chunk

    def close(self) -> None:
        self._inner.close()


def install_body_cap(client: httpx.Client, limit: int) -> None:
    """Make ``client`` stop reading any response body past ``limit`` bytes."""

    def cap(response: httpx.Response) -> None:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            response.close()
            raise BodyTooLarge(f"body of {length} bytes is larger than {limit} bytes")
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _CappedStream(response.stream, limit)

    cap._trove_cap = True  # type: ignore[attr-defined]
    hooks = client.event_hooks
    response_hooks = [h for h in hooks.get("response", []) if not getattr(h, "_trove_cap", False)]
    client.event_hooks = {
        "request": list(hooks.get("request", [])),
        "response": [*response_hooks, cap],
    }


class Fetcher:
    """GETs URLs through the guard, following redirects one hop at a time."""

    def __init__(
        self,
        http: HttpClient,
        guard: AddressGuard,
        user_agent: str,
        *,
        allowed_hosts: frozenset[str],
        max_redirects: int = 5,
    ) -> None:
        self.http = http
        self.guard = guard
        self.user_agent = user_agent
        self.allowed_hosts = allowed_hosts
        self.max_redirects = max_redirects

    def get(
        self,
        url: str,
        *,
        validators: Callable[[str], dict[str, str]] | None = None,
        follow: Callable[[str], bool] | None = None,
    ) -> Fetched:
        """The final response for ``url``.

        :raises OffHost: ``url`` is not on an allowed host (a redirect off them is refused
            and returned as the 3xx response, like one ``follow`` says no to).
        :raises BlockedAddress: a hop's host is not public (and private hosts are not allowed).
        :raises FetchError: too many redirects, a body over the cap, or a malformed response.
        :raises SourceAuthError: a hop answered 401/403.
        :raises SourceUnavailable: a hop kept failing (5xx, 429, network) past the retry budget.
        """
        if host_of(url) not in self.allowed_hosts:
            raise OffHost(f"{url}: not on an allowed host (start URLs, sitemaps, allowed_hosts)")
        hops: list[str] = []
        current = url
        while True:
            self.guard.check(current)
            headers = {"User-Agent": self.user_agent}
            if validators is not None:
                headers.update(validators(current))
            try:
                response = self.http.get(current, headers=headers, follow_redirects=False)
            except BodyTooLarge as exc:
                raise FetchError(f"{current}: {exc}") from exc
            except httpx.HTTPError as exc:  # decoding errors, invalid URLs: not retryable
                raise FetchError(f"{current}: {type(exc).__name__}") from exc
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return Fetched(
                    current, response.status_code, response.headers, response.content, tuple(hops)
                )
            target = normalise(location, base=current)
            if (
                target is None
                or host_of(target) not in self.allowed_hosts
                or (follow is not None and not follow(target))
            ):
                return Fetched(
                    current,
                    response.status_code,
                    response.headers,
                    b"",
                    tuple(hops),
                    refused_redirect=target or location,
                )
            hops.append(current)
            if len(hops) > self.max_redirects:
                raise TooManyRedirects(f"{url}: more than {self.max_redirects} redirects")
            current = target
