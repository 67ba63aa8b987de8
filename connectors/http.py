"""HTTP for connectors: httpx with retries that respect the server.

* 429 and 503 (and an overload 403 that carries ``Retry-After``) wait as long as
  the server asks: ``Retry-After`` (delta-seconds or an HTTP-date) or
  Atlassian's ``X-RateLimit-Reset`` (an ISO 8601 time), whichever is later.
  The server's wait is never cut to ``max_delay_s``: retrying before it is over
  only earns another 429 (Atlassian: "the request will fail and return the same
  or longer Retry-After period") and burns the budget. Without such a header,
  and for 500/502/504 and transport errors, capped exponential backoff with
  jitter (sleep in ``[base/2, base]``, at most ``max_delay_s``).
* The total time spent waiting is bounded (``max_total_s``): a wait that would
  pass it is not started, and the request fails at once with
  :class:`SourceUnavailable`, whose message says that the retry budget ran out
  and how long the server asked to wait (that message is what a run's summary
  reports).
* 401/403 raise :class:`SourceAuthError` with the URL (never the credentials);
  other 4xx are returned to the caller, who knows whether a 404 means "deleted".
  A client that turns statuses into errors raises :class:`RequestFailed`
  (:class:`NotFound` for a 404) and reads bodies with :func:`json_object`.

The attempts and the waits are counted by :class:`core.retry.RetryBudget`, the
policy every retrying client of Trove shares.

Sleeping and the clock are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.common import parse_http_date, parse_iso_time, redact_url
from connectors.errors import ConnectorError
from core.retry import RetryBudget, RetryPolicy

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class SourceUnavailable(ConnectorError):
    """The source kept failing or throttling past the retry budget."""


class SourceAuthError(ConnectorError):
    """The source rejected the credentials (401) or the permissions (403)."""


class RequestFailed(ConnectorError):
    """A request answered an error status that retrying cannot clear; ``status`` says which."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(RequestFailed):
    """404: gone, or not visible to the credentials; the caller decides whether that is a
    deletion (a source's own subclass may say so by also being a ``DocumentGone``)."""


class UnexpectedResponse(SourceUnavailable):
    """A successful response whose body is not the JSON object the API documents."""


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The body of ``response`` to ``what`` (``"GET /path"``) as a JSON object.

    :raises UnexpectedResponse: the body is not JSON, or JSON but not an object.
    """
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("content-type", "?")
        raise UnexpectedResponse(f"{what} did not return JSON (content-type {kind})") from None
    if not isinstance(data, dict):
        raise UnexpectedResponse(f"{what} returned JSON that is not an object")
    return data


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: ``"120"`` or ``"Wed, 21 Oct 2026 07:28:00 GMT"``."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    if when is None:
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def rate_limit_reset_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Atlassian's ``X-RateLimit-Reset`` (``2026-02-02T12:00Z``, ISO 8601) as seconds from now."""
    if value is None or not value.strip():
        return None
    when = parse_iso_time(value.strip())
    if when is None:
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def server_wait_seconds(headers: httpx.Headers | dict[str, str]) -> float | None:
    """How long a throttling response asks the client to wait (the later of the two headers)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    waits = [
        w
        for w in (
            retry_after_seconds(lowered.get("retry-after")),
            rate_limit_reset_seconds(lowered.get("x-ratelimit-reset")),
        )
        if w is not None
    ]
    return max(waits) if waits else None


class HttpClient:
    """An ``httpx.Client`` whose :meth:`request` retries as described in the module doc."""

    def __init__(
        self,
        client: httpx.Client,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self.retries = 0  # how many times a request was retried (for metadata)
        self.waited_s = 0.0
        self.budget_exhausted = False  # a request gave up because the retry budget ran out

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        policy = self.policy
        started = self._clock()
        budget = RetryBudget(policy, self._rand)
        while True:
            response: httpx.Response | None = None
            error: httpx.TransportError | None = None
            try:
                answer = self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            else:
                response = answer
                if answer.status_code in (401, 403) and not self._retryable_403(answer):
                    raise SourceAuthError(
                        f"{method} {redact_url(url)} was refused with {answer.status_code}: "
                        "check the credentials and their scopes (docs/connectors.md)"
                    )
                if answer.status_code not in RETRY_STATUSES and not self._retryable_403(answer):
                    return answer
            server_wait = None
            if response is not None and response.status_code in (403, 429, 503):
                server_wait = server_wait_seconds(response.headers)
            spent = self._clock() - started
            wait = budget.after_failure(spent, server_wait)
            attempt, delay = budget.failures, wait.delay_s
            if wait.give_up:
                what = f"status {response.status_code}" if response is not None else repr(error)
                why = (
                    f"; the retry budget ran out: the server asked to wait {delay:.0f}s more "
                    f"and {max(0.0, policy.max_total_s - spent):.0f}s of the "
                    f"{policy.max_total_s:.0f}s budget (retry.max_total_s) was left"
                    if wait.server_asked and not wait.out_of_attempts
                    else f"; the retry budget ran out ({policy.max_attempts} attempts, "
                    f"{policy.max_total_s:.0f}s)"
                )
                self.budget_exhausted = True
                raise SourceUnavailable(
                    f"{method} {redact_url(url)} still failing after {attempt} attempts "
                    f"and {spent:.0f}s ({what}){why}"
                )
            log.info(
                "retrying %s %s in %.1fs (attempt %d)", method, redact_url(url), delay, attempt
            )
            self.retries += 1
            self.waited_s += delay
            self._sleep(delay)

    def _retryable_403(self, response: httpx.Response) -> bool:
        # Confluence answers 403 when overloaded, with Retry-After; a plain 403 is a refusal.
        return response.status_code == 403 and "Retry-After" in response.headers

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self.client.close()
