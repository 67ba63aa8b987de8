"""Item permissions read once per run and shared by the reads that follow.

A ``trove ingest`` of a SharePoint source runs the group sync first (which must
walk every item's permissions to learn which groups to expand), then the
ingest's own listing, its downloads and, when due, the id-only re-sync. Each
used to read every item's permissions again, doubling the Graph quota a run
spends. The reads go through this store instead: the group sync always reads
afresh and records what it read; the steps after it reuse an entry younger
than ``shared_permission_reads_s`` and record what they read themselves.

Entries are keyed by Graph endpoint, tenant, source and item path, live in
this process only, and are dropped once too old. A sharing change made after
an entry was read is seen by the next read after the entry expires (the next
group sync always reads afresh), so the window bounds how stale an ACL can be;
``0`` turns sharing off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Key = tuple[str, str, str, str]  # (graph base URL, tenant id, source, item permissions path)


class SharedPermissionReads:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[Key, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def put(self, key: Key, permissions: list[dict[str, Any]]) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), list(permissions))

    def get(self, key: Key, max_age_s: float) -> list[dict[str, Any]] | None:
        """The permissions read for ``key`` at most ``max_age_s`` ago, else ``None``."""
        if max_age_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] > max_age_s:
                del self._entries[key]
                return None
            return list(entry[1])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


SHARED_READS = SharedPermissionReads()
