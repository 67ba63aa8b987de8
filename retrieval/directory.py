"""The group directory: who is in which source group, for expanding a caller at query time.

Chunks carry group *tokens* (``wiki:group:finance``), never expanded member
lists, so a membership change is one row here and no chunk is rewritten. Each
source's group sync replaces that source's rows in one transaction (readers
see the old or the new memberships, never half); a source that has never
synced expands to nothing (fail closed).

At query time :meth:`GroupDirectory.expand` takes the verified principal and
adds, for every source: the person's native user tokens (an Atlassian
``accountId`` found by e-mail), the groups their identity and those tokens
belong to (nesting already flattened by the sync), and the tenant token of a
source whose directory knows them (SharePoint "people in your organisation"
links). Entries of the caller's groups claim are groups only: they are kept,
and looked up as members only when they name a group the directory holds, never
as a user identity (a claimed group named ``ceo@corp.com`` gets nobody the
CEO's groups).

Every identity, member, token and group is stored and compared in the one
canonical form of :mod:`core.identity` (NFKC, case-folded, trimmed), as chunk
ACLs and principals are, so the directory and a deny always agree on who is
who. A name a source reports with no canonical form is dropped (it could only
ever grant, and nobody can present it). A directory written before this form
is rewritten in it when first opened (``PRAGMA user_version``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import GroupSnapshot
from core.acl import Principal
from core.identity import IDENTITY_FORM, InvalidIdentity, canonical_group, canonical_user

log = logging.getLogger(__name__)

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


def _canonical(value: object, canonical: Callable[[object], str]) -> str | None:
    """The canonical form of ``value``; None when it has none (the caller drops it)."""
    try:
        return canonical(value)
    except InvalidIdentity:
        return None


def _identity(value: object) -> str | None:
    """A person's identity or token (an e-mail, a UPN, ``{source}:user:{id}``)."""
    return _canonical(value, canonical_user)


def _group(value: object) -> str | None:
    """A group token (``{source}:group:{id}``, a site group, a tenant token)."""
    return _canonical(value, canonical_group)


def _pairs(
    pairs: Iterable[tuple[object, object]],
    first: Callable[[object], str | None],
    second: Callable[[object], str | None],
    what: str,
) -> set[tuple[str, str]]:
    """``pairs`` in canonical form; a pair with a name that has none is dropped (logged)."""
    kept: set[tuple[str, str]] = set()
    dropped: list[tuple[object, object]] = []
    for a, b in pairs:
        if a is None or (isinstance(a, str) and not a.strip()):
            continue  # a blank entry names nobody
        ca, cb = first(a), second(b)
        if ca is None or cb is None:
            dropped.append((a, b))
        else:
            kept.add((ca, cb))
    if dropped:
        log.warning(
            "group directory: %d %s dropped, a name has no canonical form (e.g. %r)",
            len(dropped),
            what,
            dropped[0],
        )
    return kept


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
            _rewrite_in_canonical_form(conn)
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
        groups = {g for g in map(_group, snapshot.members) if g is not None}
        refused = [g for g in snapshot.members if _group(g) is None]
        if refused:
            log.warning(
                "group directory: source %s: %d groups dropped, no canonical form (e.g. %r)",
                snapshot.source,
                len(refused),
                refused[0],
            )
        memberships = _pairs(
            ((member, group) for group, members in snapshot.members.items() for member in members),
            _identity,
            _group,
            "memberships",
        )
        users = _pairs(
            ((identity, user.token) for user in snapshot.users for identity in user.identities),
            _identity,
            _identity,
            "user identities",
        )
        tenant_token = None if snapshot.tenant_token is None else _group(snapshot.tenant_token)
        user_count = len({t for t in map(_identity, (u.token for u in snapshot.users)) if t})
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
                    [(snapshot.source, g) for g in sorted(groups)],
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
                        tenant_token,
                        len(groups),
                        user_count,
                        len(memberships),
                    ),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return SyncCounts(
            groups=len(groups),
            users=user_count,
            memberships=len(memberships),
            memberships_added=len(memberships - before),
            memberships_removed=len(before - memberships),
        )

    # -- reading (query time) --------------------------------------------------------

    def expand(self, principal: Principal) -> Principal:
        """``principal`` with the tokens its identity holds in every synced source."""
        user = principal.user  # canonical: a Principal canonicalises its names
        claimed = sorted(principal.groups)
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return principal
            native = conn.execute(
                "SELECT source, token FROM users WHERE identity = ?", (user,)
            ).fetchall()
            known_in = {source for source, _ in native}
            tenants = conn.execute(
                "SELECT source, tenant_token FROM sources WHERE tenant_token IS NOT NULL"
            ).fetchall()
            # A tenant token can itself be a member ("Everyone except external
            # users" in a SharePoint site group), so it joins the lookup keys.
            tenant_tokens = {token for source, token in tenants if source in known_in}
            # The groups claim holds groups, never identities: an entry is a lookup
            # key only when it names a group this directory holds (a group nested
            # in another); an e-mail or a user token in it is not looked up.
            keys = {user} | {t for _, t in native} | tenant_tokens | _held_groups(conn, claimed)
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


def _held_groups(conn: sqlite3.Connection, names: list[str]) -> set[str]:
    """Those of ``names`` that are groups of some source in this directory."""
    if not names:
        return set()
    rows = conn.execute(f"SELECT DISTINCT grp FROM groups WHERE grp IN ({_marks(names)})", names)
    return {g for (g,) in rows}


def _marks(values: Iterable[str]) -> str:
    return ", ".join("?" for _ in values)


def _rewrite_in_canonical_form(conn: sqlite3.Connection) -> None:
    """Bring a directory written under an older identity form to the current one.

    Rows written before names had one canonical form may hold ``Bob@Example.com``
    or ``Wiki:user:42``; looked up by canonical names they would be missed, and a
    missed group is a missed deny. So every row is rewritten once, in one
    transaction, and the form recorded in ``PRAGMA user_version``.
    """
    if _stored_form(conn) >= IDENTITY_FORM:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _stored_form(conn) < IDENTITY_FORM:  # another process may have done it meanwhile
            _rewrite_rows(conn)
            conn.execute(f"PRAGMA user_version = {int(IDENTITY_FORM)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _stored_form(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _rewrite_rows(conn: sqlite3.Connection) -> None:
    memberships = {
        (source, member, grp)
        for source, m, g in conn.execute("SELECT source, member, grp FROM memberships")
        if (member := _identity(m)) is not None and (grp := _group(g)) is not None
    }
    users = {
        (source, identity, token)
        for source, i, t in conn.execute("SELECT source, identity, token FROM users")
        if (identity := _identity(i)) is not None and (token := _identity(t)) is not None
    }
    groups = {
        (source, grp)
        for source, g in conn.execute("SELECT source, grp FROM groups")
        if (grp := _group(g)) is not None
    }
    tenants = [
        (None if token is None else _group(token), source)
        for source, token in conn.execute("SELECT source, tenant_token FROM sources")
    ]
    conn.execute("DELETE FROM memberships")
    conn.execute("DELETE FROM users")
    conn.execute("DELETE FROM groups")
    conn.executemany("INSERT INTO memberships (source, member, grp) VALUES (?, ?, ?)", memberships)
    conn.executemany("INSERT INTO users (source, identity, token) VALUES (?, ?, ?)", users)
    conn.executemany("INSERT INTO groups (source, grp) VALUES (?, ?)", groups)
    conn.executemany("UPDATE sources SET tenant_token = ? WHERE source = ?", tenants)
