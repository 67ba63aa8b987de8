"""The audit log: one JSON line per search, document lookup or refused request.

Each line holds the time, the event, the principal's user id (and tenant), the
client address when the request came over HTTP, a SHA-256 of the query (the raw
text only when ``api.audit_log_queries`` is on), the returned chunk ids, the
outcome and the latency. Never a token, a passage's text, a group list or any
other request content: the log says *who asked and what they were shown*, not
what it said.

Refusals without a principal (a missing or invalid token, an address over its
limit) cost an attacker nothing to send, so they are sampled: at most
``refusals_per_minute`` of them are written in full per minute, the rest are
counted, and one ``refusals_summary`` line per minute gives the count by outcome
and the busiest client addresses. A flood of bad tokens therefore adds a bounded
number of lines per minute, however fast it comes.

Note that a hash of a short, guessable query can be reversed by trying
candidates; the hash lets an auditor match repeated queries, it is not secrecy.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from core.errors import TroveError

# Set by the HTTP edges (see retrieval.api.middleware) for the duration of a request.
client_address: ContextVar[str | None] = ContextVar("trove_audit_client", default=None)

DEFAULT_REFUSALS_PER_MINUTE = 60
WINDOW_S = 60.0
MAX_COUNTED_CLIENTS = 1_000  # distinct addresses counted per window; the rest as "other"
TOP_CLIENTS = 10  # addresses named in a summary line


class AuditError(TroveError, RuntimeError):
    """The audit log cannot be written; the message names the file."""


def query_hash(query: str) -> str:
    # surrogatepass: a lone surrogate (valid in a JSON string) still hashes.
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


def _encode(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class _Window:
    started_mono: float
    started: str
    written: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)


class RefusalSampler:
    """Which principal-less refusals are written in full, and the summary of the rest.

    Not thread-safe on its own: :class:`AuditLog` calls it under its lock.
    """

    def __init__(
        self,
        per_window: int,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if per_window < 0:
            raise ValueError(f"per_window must be >= 0, got {per_window}")
        self.per_window = per_window
        self.window_s = window_s
        self.clock = clock
        self._window = _Window(clock(), _now())

    def roll(self) -> dict[str, Any] | None:
        """Start a new window if the current one is over; its summary line, if any."""
        now = self.clock()
        if now - self._window.started_mono < self.window_s:
            return None
        summary = self.summary()
        self._window = _Window(now, _now())
        return summary

    def admit(self, kind: str, client: str | None) -> bool:
        """Whether this refusal gets its own line; otherwise it is counted."""
        window = self._window
        if window.written < self.per_window:
            window.written += 1
            return True
        window.suppressed[kind] += 1
        name = client or "unknown"
        if name in window.clients or len(window.clients) < MAX_COUNTED_CLIENTS:
            window.clients[name] += 1
        else:
            window.clients["other"] += 1
        return False

    def summary(self) -> dict[str, Any] | None:
        window = self._window
        total = sum(window.suppressed.values())
        if not total:
            return None
        return {
            "time": _now(),
            "event": "refusals_summary",
            "principal": None,
            "tenant": None,
            "outcome": "suppressed",
            "since": window.started,
            "written": window.written,
            "suppressed": total,
            "by_outcome": dict(sorted(window.suppressed.items())),
            "top_clients": dict(window.clients.most_common(TOP_CLIENTS)),
            "chunk_ids": [],
        }


class AuditLog:
    """Appends JSON lines to ``path`` (thread-safe; each line flushed as written).

    :param path: the log file, created with its folder; ``None`` disables the log.
    :param include_queries: also write the raw query text.
    :param refusals_per_minute: refusals without a principal written in full per
        minute; the rest go into one summary line per minute (see the module docstring).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        include_queries: bool = False,
        refusals_per_minute: int = DEFAULT_REFUSALS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.include_queries = include_queries
        self._sampler = RefusalSampler(refusals_per_minute, clock=clock)
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # backslashreplace: a lone surrogate in a value is written as the JSON
                # escape \udXXX instead of failing the write (and the request).
                self._file = open(  # noqa: SIM115 - kept open
                    path, "a", encoding="utf-8", errors="backslashreplace"
                )
            except OSError as exc:
                raise AuditError(f"cannot open audit log {path}: {exc}") from exc

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def record(
        self,
        event: str,
        *,
        principal: str | None,
        tenant: str | None = None,
        query: str | None = None,
        chunk_ids: Sequence[str] = (),
        doc_id: str | None = None,
        outcome: str = "ok",
        latency_ms: float | None = None,
    ) -> dict[str, Any] | None:
        """Write one line; returns the entry (``None`` when disabled or sampled out)."""
        if self._file is None:
            return None
        client = client_address.get()
        entry: dict[str, Any] = {
            "time": _now(),
            "event": event,
            "principal": principal,
            "tenant": tenant,
            "outcome": outcome,
        }
        if client is not None:
            entry["client"] = client
        if query is not None:
            entry["query_sha256"] = query_hash(query)
            if self.include_queries:
                entry["query"] = query
        if doc_id is not None:
            entry["doc_id"] = doc_id
        entry["chunk_ids"] = list(chunk_ids)
        if latency_ms is not None:
            entry["latency_ms"] = round(latency_ms, 3)
        # Encoded before taking the lock: concurrent requests wait only for the write.
        line = _encode(entry)
        with self._lock:
            summary = self._sampler.roll()
            lines = [_encode(summary)] if summary is not None else []
            admitted = principal is not None or self._sampler.admit(f"{event}:{outcome}", client)
            if admitted:
                lines.append(line)
            self._write_lines(lines)
        return entry if admitted else None

    def _write(self, entries: list[dict[str, Any]]) -> None:
        self._write_lines([_encode(e) for e in entries])

    def _write_lines(self, lines: list[str]) -> None:
        if self._file is None or not lines:
            return
        text = "".join(lines)
        try:
            self._file.write(text)
            self._file.flush()
        except (OSError, ValueError) as exc:  # ValueError: written after close()
            raise AuditError(f"cannot write audit log {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                summary = self._sampler.summary()
                self._write([summary] if summary is not None else [])
            finally:
                self._file.close()
                self._file = None
