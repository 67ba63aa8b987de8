"""HTTP for connectors: httpx with retries that respect the server.

* 429 and 503 honour ``Retry-After`` (delta-seconds or an HTTP-date), capped at
  ``max_delay_s``; without the header, and for 500/502/504 and transport errors,
  capped exponential backoff with jitter (sleep in ``[base/2, base]``).
* The total time spent waiting is bounded (``max_total_s``): past it the
  request fails with :class:`SourceUnavailable` rather than hanging a run.
* 401/403 raise :class:`SourceAuthError` with the URL (never the credentials);
  other 4xx are returned to the caller, who knows whether a 404 means "deleted".

Sleeping and the clock are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class SourceUnavailable(ConnectorError):
    """The source kept failing or throttling past the retry budget."""


class SourceAuthError(ConnectorError):
    """The source rejected the credentials (401) or the permissions (403)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_s: float = 300.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: ``"120"`` or ``"Wed, 21 Oct 2026 07:28:00 GMT"``."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_seconds(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    base = min(policy.max_delay_s, policy.base_delay_s * (2**attempt))
    return base / 2 + rand() * base / 2


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

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        policy = self.policy
        started = self._clock()
        attempt = 0
        while True:
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                response, error = None, exc
            else:
                error = None
                if response.status_code in (401, 403) and not self._retryable_403(response):
                    raise SourceAuthError(
                        f"{method} {_safe(url)} was refused with {response.status_code}: "
                        "check the credentials and their scopes (docs/connectors.md)"
                    )
                if response.status_code not in RETRY_STATUSES and not self._retryable_403(response):
                    return response
            attempt += 1
            delay = None
            if response is not None and response.status_code in (403, 429, 503):
                delay = retry_after_seconds(response.headers.get("Retry-After"))
            if delay is None:
                delay = backoff_seconds(attempt - 1, policy, self._rand)
            delay = min(delay, policy.max_delay_s)
            spent = self._clock() - started
            if attempt >= policy.max_attempts or spent + delay > policy.max_total_s:
                what = f"status {response.status_code}" if response is not None else repr(error)
                raise SourceUnavailable(
                    f"{method} {_safe(url)} still failing after {attempt} attempts "
                    f"and {spent:.0f}s ({what})"
                )
            log.info("retrying %s %s in %.1fs (attempt %d)", method, _safe(url), delay, attempt)
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


def _safe(url: str) -> str:
    """The URL without its query string (which may carry tokens such as SAS signatures)."""
    return str(url).split("?", 1)[0]
