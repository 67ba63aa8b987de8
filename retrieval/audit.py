"""The audit log: one JSON line per search, document lookup or refused request.

Each line holds the time, the event, the principal's user id (and tenant),
a SHA-256 of the query (the raw text only when ``api.audit_log_queries`` is on),
the returned chunk ids, the outcome and the latency. Never a token, a passage's
text, a group list or any other request content: the log says *who asked and
what they were shown*, not what it said.

Note that a hash of a short, guessable query can be reversed by trying
candidates; the hash lets an auditor match repeated queries, it is not secrecy.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


class AuditError(RuntimeError):
    """The audit log cannot be written; the message names the file."""


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends JSON lines to ``path`` (thread-safe; each line flushed as written).

    :param path: the log file, created with its folder; ``None`` disables the log.
    :param include_queries: also write the raw query text.
    """

    def __init__(self, path: Path | None, *, include_queries: bool = False):
        self.path = path
        self.include_queries = include_queries
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
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
        """Write one line; returns the entry (``None`` when the log is disabled)."""
        if self._file is None:
            return None
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "principal": principal,
            "tenant": tenant,
            "outcome": outcome,
        }
        if query is not None:
            entry["query_sha256"] = query_hash(query)
            if self.include_queries:
                entry["query"] = query
        if doc_id is not None:
            entry["doc_id"] = doc_id
        entry["chunk_ids"] = list(chunk_ids)
        if latency_ms is not None:
            entry["latency_ms"] = round(latency_ms, 3)
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file is None:
                return None
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                raise AuditError(f"cannot write audit log {self.path}: {exc}") from exc
        return entry

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
