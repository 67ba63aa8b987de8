"""Confluence read permissions mapped onto Trove's :class:`~core.acl.Acl`.

A person may read a page when they may view its space **and** pass the read
restriction of the page **and of every ancestor** (view restrictions cascade
down the tree; edit restrictions do not, and are ignored). So:

* The space's ``read``/``space`` permission holders (v2
  ``/spaces/{id}/permissions``) become the ACL's allow lists: a user whose
  e-mail is visible is that lower-cased address in ``allow_users``; a user
  with a hidden e-mail is the token ``{source}:user:{accountId}`` in
  ``allow_groups``; a group is ``{source}:group:{group id}`` (the name only
  when Confluence gives no id; :meth:`ConfluenceConnector.sync_groups`
  publishes both). v2 names three principal types, ``user``, ``group`` and
  ``role`` (Confluence Cloud REST v2, "Get space permissions assignments",
  ``SpacePermissionAssignment.principal.type``). The role ``ANONYMOUS``
  (anonymous read) makes the ACL ``public``; the logged-in-users roles
  (:data:`LOGGED_IN_ROLES`) grant the site token ``{source}:tenant:{host}``,
  which :meth:`ConfluenceConnector.sync_groups` gives every user it lists. The
  legacy forms (a principal of type ``anonymous``, the access classes of
  space-role assignments) are read the same way.
* Each *restricted* node — the page itself and each restricted ancestor
  (page or folder) — becomes one :class:`~core.acl.AclLayer` with the same
  principal mapping. The reader must match one entry of every layer (an AND
  of ORs), so "page -> group A, parent -> bob" admits bob only if he is in A,
  and admits no other member of A. Intersecting identity strings instead
  (Elastic's approach) gives the empty set for that mix.
* Unknown principal types are dropped and logged: that can only narrow a
  grant (deny). A restriction whose every entry is unknown stays a layer with
  no entries, which admits nobody.
* Fail closed: if the space's permissions or the restrictions of the page or
  of any ancestor cannot be read (a 404 included, or a 5xx that outlasts the
  retries), :meth:`AccessResolver.acl` raises; the connector records a
  per-document failure and retries it next run. A failed permission lookup
  never counts as a deletion: only the page's own 404 does.

Space grants, user e-mails and per-node restrictions are cached for one run,
so a deep tree costs one restriction read per node, not one per descendant;
so are the lookups that failed, so a space or an ancestor whose lookup keeps
failing costs one retry budget per run, not one per page under it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from connectors import principals
from connectors.confluence.client import ConfluenceClient, ConfluenceRequestError, NotFound
from connectors.http import SourceUnavailable
from core.acl import Acl, AclLayer

log = logging.getLogger(__name__)

# Anonymous viewers: the v2 role ``ANONYMOUS`` (the documented form), a legacy
# principal of type "anonymous", or the access class "anonymous-users" (space-role
# assignments, type ACCESS_CLASS).
_ANONYMOUS_TYPES = frozenset({"anonymous"})
ANONYMOUS_ROLES = frozenset({"anonymous", "anonymous-users", "anonymous_users"})
# Everyone who can log in to the site. Atlassian's OpenAPI names the principal
# type ``role`` but not the role ids; these are the spellings of the logged-in
# and licensed-users classes seen in the role and access-class APIs. Any other
# role is unknown and denied (logged).
LOGGED_IN_ROLES = frozenset(
    {
        "logged_in",
        "logged_in_users",
        "logged-in-users",
        "authenticated",
        "authenticated-users",
        "authenticated_users",
        "all-licensed-users",
        "all_licensed_users",
        "licensed_users",
    }
)


@dataclass(frozen=True)
class SpaceGrant:
    """Who may view a space: e-mails, principal tokens (groups, e-mail-less users), anonymous."""

    users: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()
    public: bool = False


def user_entry(source: str, account_id: str, email: str | None) -> tuple[str, str]:
    """``("user", email)`` when the e-mail is visible, else ``("token", user token)``."""
    if email and email.strip():
        return "user", principals.email(email)
    return "token", principals.user_token(source, account_id)


def group_key(group: dict[str, Any]) -> str | None:
    """The id a group token is built from: the group id, else its name."""
    value = group.get("id") or group.get("groupId") or group.get("name")
    return str(value) if value else None


def space_grant(
    source: str,
    entries: Iterable[dict[str, Any]],
    email_of: Callable[[str], str | None],
    *,
    space: str = "",
    site_token: str | None = None,
) -> SpaceGrant:
    """The ``read``/``space`` entries of v2 space permissions as a :class:`SpaceGrant`.

    ``site_token`` is what a logged-in-users role grants (``None``: nothing).
    """
    users: set[str] = set()
    tokens: set[str] = set()
    public = False
    for entry in entries:
        operation = entry.get("operation") or {}
        if operation.get("key") != "read" or operation.get("targetType") != "space":
            continue
        principal = entry.get("principal") or {}
        kind = str(principal.get("type") or "").lower()
        pid = str(principal.get("id") or "")
        if kind == "user" and pid:
            where, value = user_entry(source, pid, email_of(pid))
            (users if where == "user" else tokens).add(value)
        elif kind == "group" and pid:
            tokens.add(principals.group_token(source, pid))
        elif kind in _ANONYMOUS_TYPES or (
            kind in ("role", "access_class") and pid.lower() in ANONYMOUS_ROLES
        ):
            public = True
        elif kind in ("role", "access_class") and pid.lower() in LOGGED_IN_ROLES and site_token:
            tokens.add(site_token)
        else:
            log.warning(
                "confluence %s: space %s grants read to an unknown principal type %r "
                "(id %r); ignored (deny)",
                source,
                space,
                principal.get("type"),
                pid,
            )
    return SpaceGrant(frozenset(users), frozenset(tokens), public)


def read_layer(source: str, restriction: dict[str, Any], *, content: str = "") -> AclLayer | None:
    """A read restriction (``byOperation/read`` shape) as a layer; ``None`` when unrestricted."""
    body = restriction.get("restrictions") or {}
    user_block = body.get("user") or {}
    group_block = body.get("group") or {}
    raw_users = [u for u in user_block.get("results") or [] if isinstance(u, dict)]
    raw_groups = [g for g in group_block.get("results") or [] if isinstance(g, dict)]
    sizes = [b.get("size") for b in (user_block, group_block) if isinstance(b.get("size"), int)]
    if not raw_users and not raw_groups:
        if any(sizes):
            # Restricted, but the entries were not expanded: admit nobody rather than everybody.
            log.warning(
                "confluence %s: read restriction of %s has entries that were not returned; "
                "failing closed",
                source,
                content,
            )
            return AclLayer()
        return None
    users: set[str] = set()
    tokens: set[str] = set()
    for user in raw_users:
        account = user.get("accountId")
        if account and str(user.get("type") or "known").lower() != "anonymous":
            where, value = user_entry(source, str(account), user.get("email"))
            (users if where == "user" else tokens).add(value)
        else:
            log.warning(
                "confluence %s: read restriction of %s names an unknown user principal "
                "(type %r); ignored (deny)",
                source,
                content,
                user.get("type"),
            )
    for group in raw_groups:
        key = group_key(group)
        if key and str(group.get("type") or "group").lower() == "group":
            tokens.add(principals.group_token(source, key))
        else:
            log.warning(
                "confluence %s: read restriction of %s names an unknown group principal "
                "(type %r); ignored (deny)",
                source,
                content,
                group.get("type"),
            )
    for block, raw in ((user_block, raw_users), (group_block, raw_groups)):
        size, total = block.get("size"), block.get("totalSize")
        truncated = (isinstance(total, int) and total > len(raw)) or (
            isinstance(size, int) and size > len(raw)
        )
        if truncated:
            log.warning(
                "confluence %s: read restriction of %s was truncated by the API; "
                "readers beyond the first page are left out (fail closed)",
                source,
                content,
            )
    return AclLayer(frozenset(users), frozenset(tokens))


def effective_acl(grant: SpaceGrant, layers: Iterable[AclLayer]) -> Acl:
    return Acl(
        allow_users=grant.users,
        allow_groups=grant.tokens,
        public=grant.public,
        layers=tuple(layers),
    )


_MISSING = object()


class AccessResolver:
    """Effective ACLs for one run, with the space grants and restrictions it has read cached."""

    def __init__(
        self, client: ConfluenceClient, source: str, site_token: str | None = None
    ) -> None:
        self.client = client
        self.source = source
        self.site_token = site_token
        self._grants: dict[str, SpaceGrant | SourceUnavailable] = {}
        self._layers: dict[str, AclLayer | ConfluenceRequestError | SourceUnavailable | None] = {}
        self._emails: dict[str, str | None] = {}

    def email_of(self, account_id: str) -> str | None:
        if account_id not in self._emails:
            try:
                user = self.client.user(account_id)
            except ConfluenceRequestError as exc:
                log.info("confluence %s: no profile for a user (%s)", self.source, exc.status)
                user = {}
            email = user.get("email")
            self._emails[account_id] = str(email) if email else None
        return self._emails[account_id]

    def space_grant(self, space_id: str, space_key: str = "") -> SpaceGrant:
        """Who may view the space; raises (cached) when a read ran out of retries."""
        if space_id not in self._grants:
            try:
                self._grants[space_id] = space_grant(
                    self.source,
                    self.client.space_permissions(space_id),
                    self.email_of,
                    space=space_key or space_id,
                    site_token=self.site_token,
                )
            except SourceUnavailable as exc:
                self._grants[space_id] = exc
                raise
        grant = self._grants[space_id]
        if isinstance(grant, SourceUnavailable):
            raise grant
        return grant

    def prime(self, content_id: str, restriction: dict[str, Any] | None) -> None:
        """Record restrictions that arrived inline (CQL ``expand``), saving a request."""
        if restriction is not None and content_id not in self._layers:
            self._layers[content_id] = read_layer(self.source, restriction, content=content_id)

    def layer(self, content_id: str) -> AclLayer | None:
        """The node's read layer; raises :class:`NotFound`/`ConfluenceRequestError`, or
        ``SourceUnavailable`` when the read ran out of retries (both cached)."""
        cached = self._layers.get(content_id, _MISSING)
        if cached is _MISSING:
            try:
                data = self.client.read_restrictions(content_id)
            except (ConfluenceRequestError, SourceUnavailable) as exc:
                self._layers[content_id] = exc
                raise
            cached = self._layers[content_id] = read_layer(self.source, data, content=content_id)
        if isinstance(cached, ConfluenceRequestError | SourceUnavailable):
            raise cached
        return cached  # type: ignore[return-value]

    def acl(self, space_id: str, space_key: str, ancestors: list[str], page_id: str) -> Acl:
        """Space grant ∩ page layer ∩ every ancestor's layer.

        :raises ConfluenceRequestError: a lookup failed (a 404 included): the caller
            records a per-document failure, never a deletion and never a guess.
        :raises SourceUnavailable: a lookup still failed after its retries; the caller
            decides whether the page or the whole source is at fault.
        """
        layers = []
        for content_id in [page_id, *ancestors]:
            try:
                layer = self.layer(content_id)
            except (ConfluenceRequestError, SourceUnavailable) as exc:
                log.warning(
                    "confluence %s: restrictions of %s (page %s) are unreadable (%s)",
                    self.source,
                    content_id,
                    page_id,
                    exc.status if isinstance(exc, ConfluenceRequestError) else "still failing",
                )
                raise
            if layer is not None:
                layers.append(layer)
        return effective_acl(self.space_grant(space_id, space_key), layers)

    def forget(self, content_id: str) -> None:
        self._layers.pop(content_id, None)


def is_missing_content(exc: ConfluenceRequestError) -> bool:
    """CONFCLOUD-77618/76424: the ancestors' restriction expand 404s on a draft/trashed ancestor."""
    detail = exc.detail.lower()
    return isinstance(exc, NotFound) and (
        "no content with id" in detail or "cannot find content" in detail
    )
