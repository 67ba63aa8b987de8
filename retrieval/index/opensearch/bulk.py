"""Bulk writes that account for every item, retry what is transient and slow down
when the cluster pushes back.

* **Per-item accounting.** ``_bulk`` answers HTTP 200 even when items fail; each
  item's status is checked and a refused item is reported, never dropped.
* **Retry with backoff.** Items refused with 429 (queue full) or 502/503/504, and
  whole requests that fail the same way or cannot connect, are retried with
  exponential backoff and jitter, up to ``max_retries`` times
  (:class:`core.retry.RetryBudget`, the policy the connectors use too).
* **Backpressure.** Requests are sent one at a time and the action iterable is
  consumed lazily, so a producer can never run ahead of the cluster; on a 429
  the chunk size halves (down to ``min_actions``) and grows back by a quarter
  after each clean request. A 413 (request too large) splits the chunk.

Example::

    writer = BulkWriter(client)
    report = writer.write([BulkAction.index("trove-chunks", "d1#0", source)])
    report.raise_for_failures()
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from opensearchpy import exceptions as os_errors

from core.retry import RetryBudget, RetryPolicy
from retrieval.index.opensearch.errors import BulkWriteError, ItemFailure

log = logging.getLogger(__name__)

Op = Literal["index", "create", "update", "delete"]
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class BulkPolicy:
    max_actions: int = 500
    max_bytes: int = 8 * 1024 * 1024
    min_actions: int = 8
    max_retries: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    request_timeout_s: float | None = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_actions <= self.max_actions:
            raise ValueError(
                f"need 1 <= min_actions <= max_actions, got {self.min_actions}, {self.max_actions}"
            )
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be >= 1024, got {self.max_bytes}")
        if self.max_retries < 0 or self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("retries and backoff times must be >= 0")

    def retry_policy(self) -> RetryPolicy:
        """``max_retries`` retries per chunk, however long they take."""
        return RetryPolicy.attempts_only(
            self.max_retries, self.initial_backoff_s, self.max_backoff_s
        )


@dataclass(frozen=True)
class BulkAction:
    """One bulk operation; ``body`` is the source (index/create) or ``{"doc": ...}`` (update)."""

    op: Op
    index: str
    id: str
    body: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def index_doc(cls, index: str, id_: str, source: dict[str, Any]) -> BulkAction:
        return cls("index", index, id_, source)

    @classmethod
    def update_doc(cls, index: str, id_: str, doc: dict[str, Any]) -> BulkAction:
        return cls("update", index, id_, {"doc": doc}, {"retry_on_conflict": 3})

    @classmethod
    def delete_doc(cls, index: str, id_: str) -> BulkAction:
        return cls("delete", index, id_)

    def lines(self) -> str:
        meta = {self.op: {"_index": self.index, "_id": self.id, **self.params}}
        out = json.dumps(meta, separators=(",", ":")) + "\n"
        if self.op != "delete":
            if self.body is None:
                raise ValueError(f"bulk {self.op} of {self.id!r} needs a body")
            out += json.dumps(self.body, separators=(",", ":"), ensure_ascii=False) + "\n"
        return out


@dataclass
class BulkReport:
    succeeded: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    requests: int = 0
    retried_items: int = 0
    throttled: int = 0  # 429s seen (items or whole requests)

    def raise_for_failures(self, what: str = "bulk write") -> None:
        if self.failures:
            shown = "; ".join(str(f) for f in self.failures[:5])
            more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
            raise BulkWriteError(
                f"{what}: {len(self.failures)} of {self.succeeded + len(self.failures)} items "
                f"failed: {shown}{more}",
                list(self.failures),
            )


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, os_errors.ConnectionError):  # includes timeouts
        return True
    return isinstance(exc, os_errors.TransportError) and exc.status_code in TRANSIENT_STATUSES


class BulkWriter:
    """Sends :class:`BulkAction` s through ``client.bulk`` under a :class:`BulkPolicy`.

    :param sleep: injectable for tests (backoff without waiting).
    :param refresh: the ``refresh`` parameter of every request (``"false"`` by default;
        the index refreshes once after a batch).
    """

    def __init__(
        self,
        client: Any,
        policy: BulkPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        refresh: str = "false",
        require_alias: bool = False,
    ):
        self.client = client
        self.policy = policy or BulkPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self.refresh = refresh
        self.require_alias = require_alias
        self._chunk_size = self.policy.max_actions

    @property
    def chunk_size(self) -> int:
        """The current (adaptive) number of actions per request."""
        return self._chunk_size

    def write(self, actions: Iterable[BulkAction]) -> BulkReport:
        """Send every action; the report lists each item that finally failed."""
        report = BulkReport()
        for chunk in self._chunks(actions):
            self._send_with_retries(chunk, report)
        return report

    # -- chunking

    def _chunks(self, actions: Iterable[BulkAction]) -> Iterator[list[tuple[BulkAction, str]]]:
        chunk: list[tuple[BulkAction, str]] = []
        size = 0
        for action in actions:
            lines = action.lines()
            n = len(lines.encode("utf-8"))
            if chunk and (len(chunk) >= self._chunk_size or size + n > self.policy.max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((action, lines))
            size += n
        if chunk:
            yield chunk

    # -- sending

    def _throttled(self, report: BulkReport) -> None:
        report.throttled += 1
        self._chunk_size = max(self.policy.min_actions, self._chunk_size // 2)

    def _send_with_retries(self, chunk: list[tuple[BulkAction, str]], report: BulkReport) -> None:
        pending = chunk
        budget = RetryBudget(self.policy.retry_policy(), self._jitter)
        while pending:
            try:
                items = self._send(pending, report)
            except os_errors.TransportError as exc:
                if exc.status_code == 413 and len(pending) > 1:
                    half = len(pending) // 2
                    self._send_with_retries(pending[:half], report)
                    pending = pending[half:]
                    continue
                if not _is_transient(exc) or not budget.can_retry():
                    raise
                if exc.status_code == 429:
                    self._throttled(report)
                delay = budget.after_failure(spent_s=0.0).delay_s
                log.warning("bulk request failed (%s); retrying in %.1f s", exc, delay)
                self._sleep(delay)
                continue
            retry: list[tuple[BulkAction, str]] = []
            saw_429 = False
            for (action, lines), item in zip(pending, items, strict=True):
                result: dict[str, Any] = item.get(action.op) or next(iter(item.values()), {})
                status = int(result.get("status", 500))
                if status < 300:
                    report.succeeded += 1
                    continue
                if status in TRANSIENT_STATUSES and budget.can_retry():
                    saw_429 = saw_429 or status == 429
                    retry.append((action, lines))
                    continue
                error = result.get("error") or {}
                if isinstance(error, str):
                    error = {"type": "error", "reason": error}
                report.failures.append(
                    ItemFailure(
                        op=action.op,
                        id=action.id,
                        status=status,
                        error_type=str(error.get("type", "unknown")),
                        reason=str(error.get("reason", "")),
                    )
                )
            if not retry:
                if self._chunk_size < self.policy.max_actions:
                    self._chunk_size = min(
                        self.policy.max_actions, self._chunk_size + max(1, self._chunk_size // 4)
                    )
                return
            if saw_429:
                self._throttled(report)
            report.retried_items += len(retry)
            delay = budget.after_failure(spent_s=0.0).delay_s
            log.warning("%d bulk items refused transiently; retrying in %.1f s", len(retry), delay)
            self._sleep(delay)
            pending = retry

    def _send(self, chunk: list[tuple[BulkAction, str]], report: BulkReport) -> list[dict]:
        report.requests += 1
        params: dict[str, Any] = {"refresh": self.refresh}
        if self.require_alias:
            params["require_alias"] = "true"
        if self.policy.request_timeout_s is not None:
            params["request_timeout"] = self.policy.request_timeout_s
        response = self.client.bulk(body="".join(lines for _, lines in chunk), params=params)
        items = response.get("items")
        if not isinstance(items, list) or len(items) != len(chunk):
            got = len(items) if isinstance(items, list) else None
            raise BulkWriteError(
                f"bulk response has {got} items for {len(chunk)} actions: {str(response)[:300]}",
                [],
            )
        return items
