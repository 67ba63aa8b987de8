"""The Confluence cursor: where a full enumeration stopped, or how far CQL has read.

The cursor is JSON (``"v": 1``) in one of two modes:

``{"mode": "full", "watermark": T0, "done": [keys], "space": KEY, "next": LINK, "seen": {}}``
    A first run enumerating every page with v2. ``watermark`` is the server's
    clock (``Date`` header) when the enumeration began; ``done`` the spaces
    finished; ``space``/``next`` the v2 ``_links.next`` inside the space being
    read. A run resumed from it continues with that link (or restarts that
    space if the link has expired). The last batch of a full run switches to
    ``cql`` with ``watermark = T0``, so anything edited while it ran is re-read.

``{"mode": "cql", "watermark": T, "spaces": [keys], "seen": {...}}``
    Incremental runs: CQL ``lastmodified >= (T - overlap)`` in the API user's
    time zone, ``order by lastmodified asc``. Each batch's cursor carries the
    latest ``lastmodified`` reached so far, so a run that fails mid-way
    resumes from the last committed batch. ``spaces`` are the spaces already
    enumerated: a space added to the configuration later is enumerated in
    full (CQL would only show its recent edits), keeping ``T`` for the others.

``retry`` (both modes) lists document ids (``page:ID``/``att:ID``) whose
permission lookup failed: they were reported as failures, not indexed, and are
read again by id at the start of the next run (CQL would not show them again,
since they did not change).

``seen`` maps ``"page:ID"``/``"att:ID"`` to ``[version, lastmodified]`` for
items inside the overlap window: CQL is minute-granular and the window is
re-read on purpose, and ``seen`` de-duplicates those re-reads on
``(id, version)``. Entries older than the minute of ``watermark - overlap``
are dropped, so the cursor stays small.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from connectors.common import UnreadableCursor, dump_cursor, load_cursor, parse_iso_time

log = logging.getLogger(__name__)

CQL_DATE_FORMAT = "%Y-%m-%d %H:%M"
CURSOR_VERSION = 1


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp from the API (``...Z`` or with an offset) as an aware UTC datetime."""
    when = parse_iso_time(value)
    return when.astimezone(UTC) if when is not None else None


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cql_date(start: datetime, offset_minutes: int) -> str:
    """``start`` (UTC) as a CQL ``'yyyy-MM-dd HH:mm'`` in the API user's time zone (floored)."""
    local = start.astimezone(UTC) + timedelta(minutes=offset_minutes)
    return local.strftime(CQL_DATE_FORMAT)


@dataclass
class SyncState:
    mode: Literal["full", "cql"]
    watermark: datetime
    seen: dict[str, list[str]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    space: str | None = None
    next: str | None = None
    spaces: list[str] | None = None  # cql mode: spaces covered (None: unknown, assume all)
    retry: list[str] = field(default_factory=list)  # doc keys to read again next run

    def to_cursor(self) -> str:
        data: dict[str, Any] = {
            "mode": self.mode,
            "watermark": iso(self.watermark),
            "seen": self.seen,
        }
        if self.retry:
            data["retry"] = sorted(set(self.retry))
        if self.mode == "full":
            data.update(done=self.done, space=self.space, next=self.next)
        elif self.spaces is not None:
            data["spaces"] = sorted(self.spaces)
        return dump_cursor(data, version=CURSOR_VERSION)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> SyncState | None:
        """The state in ``cursor``; ``None`` for a first run or a cursor this code cannot read."""
        if not cursor:
            return None
        try:
            data = load_cursor(cursor, version=CURSOR_VERSION)
            mode = data["mode"]
            watermark = parse_time(data["watermark"])
            if mode not in ("full", "cql") or watermark is None:
                raise ValueError("unknown cursor mode")
            seen = {
                str(k): [str(v[0]), str(v[1])]
                for k, v in (data.get("seen") or {}).items()
                if isinstance(v, list) and len(v) == 2
            }
            spaces = data.get("spaces")
            return cls(
                spaces=[str(k) for k in spaces] if isinstance(spaces, list) else None,
                mode=mode,
                watermark=watermark,
                seen=seen,
                done=[str(k) for k in data.get("done") or []],
                space=data.get("space"),
                next=data.get("next"),
                retry=[str(k) for k in data.get("retry") or []],
            )
        except (UnreadableCursor, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("confluence: cursor not understood (%s); doing a full enumeration", exc)
            return None

    def remember(self, key: str, version: str, when: datetime | None) -> None:
        if when is not None:
            self.seen[key] = [version, iso(when)]

    def already_seen(self, key: str, version: str) -> bool:
        entry = self.seen.get(key)
        return entry is not None and entry[0] == version

    def prune(self, overlap: timedelta) -> None:
        # The next query re-reads from the *minute* of (watermark - overlap): keep all of it.
        floor = (self.watermark - overlap).replace(second=0, microsecond=0)
        for key in [k for k, (_, t) in self.seen.items() if (parse_time(t) or floor) < floor]:
            del self.seen[key]
