"""The group directory: who is in which source group, for expanding a caller at query time.

Chunks carry group *tokens* (``wiki:group:finance``), never expanded member
lists, so a membership change is one row here and no chunk is rewritten. Each
source's group sync replaces that source's rows in one transaction (readers
see the old or the new memberships, never half); a source that has never
synced expands to nothing (fail closed).

At query time :meth:`GroupDirectory.expand` takes the verified principal and
adds, for every source: the person's native user tokens (an Atlassian
``accountId`` found by e-mail), the groups any of their identities — or the
tokens already in their verified groups claim — belong to
(nesting already flattened by the sync), and the tenant token of a source
whose directory knows them (SharePoint "people in your organisation" links).
Identities are compared lower-cased.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import GroupSnapshot
from trove.acl import Principal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memberships (
    source TEXT NOT NULL, member TEXT NOT NULL, grp TEXT NOT NULL,
    PRIMARY KEY (source, member, grp)
);
CREATE INDEX IF NOT EXISTS memberships_member ON memberships (member);
CREATE TABLE IF NOT EXISTS users (
    source TEXT NOT NULL, identity TEXT NOT NULL, token TEXT NOT NULL,
    PRIMARY KEY (source, identity, token)
);
CREATE INDEX IF NOT EXISTS users_identity ON users (identity);
CREATE TABLE IF NOT EXISTS groups (
    source TEXT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY (source, grp)
);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY, synced_at TEXT NOT NULL, tenant_token TEXT,
    groups INTEGER NOT NULL, users INTEGER NOT NULL, memberships INTEGER NOT NULL
);
"""


def _key(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True)
class SyncCounts:
    groups: int
    users: int
    memberships: int
    memberships_added: int
    memberships_removed: int


class GroupDirectory:
    """SQLite-backed memberships of every source, in ``{state}/groups.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> GroupDirectory:
        return cls(Path(state_dir) / "groups.sqlite")

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not self.path.exists():
                return None  # nothing synced yet: expand to nothing, create nothing
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writing (group sync) --------------------------------------------------------

    def replace_source(self, snapshot: GroupSnapshot) -> SyncCounts:
        """Make ``snapshot`` the source's memberships, atomically."""
        memberships = {
            (_key(member) if "@" in member else member.strip(), group)
            for group, members in snapshot.members.items()
            for member in members
            if member and member.strip()
        }
        users = {
            (_key(identity), user.token)
            for user in snapshot.users
            for identity in user.identities
            if identity and identity.strip()
        }
        with self._lock:
            conn = self._connect(create=True)
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = set(
                    conn.execute(
                        "SELECT member, grp FROM memberships WHERE source = ?", (snapshot.source,)
                    ).fetchall()
                )
                conn.execute("DELETE FROM memberships WHERE source = ?", (snapshot.source,))
                conn.execute("DELETE FROM users WHERE source = ?", (snapshot.source,))
                conn.execute("DELETE FROM groups WHERE source = ?", (snapshot.source,))
                conn.executemany(
                    "INSERT INTO groups (source, grp) VALUES (?, ?)",
                    [(snapshot.source, g) for g in sorted(snapshot.members)],
                )
                conn.executemany(
                    "INSERT INTO memberships (source, member, grp) VALUES (?, ?, ?)",
                    [(snapshot.source, m, g) for m, g in sorted(memberships)],
                )
                conn.executemany(
                    "INSERT INTO users (source, identity, token) VALUES (?, ?, ?)",
                    [(snapshot.source, i, t) for i, t in sorted(users)],
                )
                conn.execute(
                    "INSERT OR REPLACE INTO sources (source, synced_at, tenant_token, groups,"
                    " users, memberships) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        snapshot.source,
                        datetime.now(UTC).isoformat(timespec="seconds"),
                        snapshot.tenant_token,
                        len(snapshot.members),
                        len({u.token for u in snapshot.users}),
                        len(memberships),
                    ),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return SyncCounts(
            groups=len(snapshot.members),
            users=len({u.token for u in snapshot.users}),
            memberships=len(memberships),
            memberships_added=len(memberships - before),
            memberships_removed=len(before - memberships),
        )

    # -- reading (query time) --------------------------------------------------------

    def expand(self, principal: Principal) -> Principal:
        """``principal`` with the tokens its identities hold in every synced source."""
        identities = {_key(principal.user)}
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return principal
            native = conn.execute(
                f"SELECT source, token FROM users WHERE identity IN ({_marks(identities)})",
                sorted(identities),
            ).fetchall()
            known_in = {source for source, _ in native}
            tenants = conn.execute(
                "SELECT source, tenant_token FROM sources WHERE tenant_token IS NOT NULL"
            ).fetchall()
            # A tenant token can itself be a member ("Everyone except external
            # users" in a SharePoint site group), so it joins the lookup keys.
            tenant_tokens = {token for source, token in tenants if source in known_in}
            # The caller's own verified groups count as identities too: an identity
            # provider may assert a native account token (hidden e-mail) or a group.
            keys = identities | set(principal.groups) | {t for _, t in native} | tenant_tokens
            groups = conn.execute(
                f"SELECT DISTINCT grp FROM memberships WHERE member IN ({_marks(keys)})",
                sorted(keys),
            ).fetchall()
        extra = {token for _, token in native} | {g for (g,) in groups} | tenant_tokens
        if not extra - principal.groups:
            return principal
        return Principal(
            user=principal.user, groups=principal.groups | extra, tenant=principal.tenant
        )

    def status(self) -> dict[str, dict[str, object]]:
        """Per source: when its groups were last synced and how many there are."""
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return {}
            rows = conn.execute(
                "SELECT source, synced_at, groups, users, memberships FROM sources"
            ).fetchall()
        return {
            r[0]: {"synced_at": r[1], "groups": r[2], "users": r[3], "memberships": r[4]}
            for r in rows
        }

    def known_groups(self, source: str) -> set[str]:
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return set()
            rows = conn.execute("SELECT grp FROM groups WHERE source = ?", (source,)).fetchall()
        return {g for (g,) in rows}


def _marks(values: Iterable[str]) -> str:
    return ", ".join("?" for _ in values)
