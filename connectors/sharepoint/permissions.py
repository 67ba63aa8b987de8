"""Graph item permissions and SharePoint login names -> Trove principals.

Graph's ``GET /drives/{d}/items/{i}/permissions`` returns the *effective* set
for an item on SharePoint/OneDrive for Business (``inheritedFrom`` is not
filled in practice, so inherited grants are listed like direct ones and are
treated the same). Each permission maps as follows; anything else grants
nothing, and an item with no mappable permission gets :meth:`Acl.empty`
(fail closed):

===============================  ==============================================
grant                            principal
===============================  ==============================================
``user``                         e-mail (``allow_users``) **and** the Entra id
                                 token ``{source}:user:{id}`` (``allow_groups``),
                                 so a caller signing in with a UPN different
                                 from the mail address is still matched
``group``                        ``{source}:group:{entra id}``
``siteUser``                     e-mail / UPN from ``i:0#.f|membership|upn``;
                                 "Everyone except external users" and
                                 "Everyone" -> the tenant token
``siteGroup``                    ``{source}:sitegroup:{site id}:{n}`` (the number
                                 is only unique within a site collection)
link ``anonymous``               the people who redeemed it (``grantedToIdentitiesV2``);
                                 public only with ``anonymous_links: public``
link ``organization``            the people who redeemed it; also the tenant token
                                 with ``organization_links: tenant``
link ``users``                   the link's grantees (``grantedToIdentitiesV2``)
link ``existingAccess``          nothing (it re-shares existing access)
``application`` / ``device``     nothing
===============================  ==============================================

Microsoft documents that an "Anyone" or "People in your organization" link does
not make an item appear in search for everyone: a person must hold the link
and redeem it, and the redeemers are listed in ``grantedToIdentitiesV2``
(Graph v1.0 "permission resource type"; SharePoint "shareable links"). So the
default grants only them; ``public``/``tenant`` are explicit opt-ins, and
``ignore`` grants nothing for such links.

A permission whose ``expirationDateTime`` has passed grants nothing (Graph:
``DateTime.MinValue``, year 1, means no expiry). Roles ``read``, ``write`` and
``owner`` all grant read; a permission with none of them grants nothing.
Groups are kept as group tokens (never expanded into chunk ACLs):
:meth:`SharePointConnector.sync_groups` resolves their members.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from connectors import principals
from connectors.common import parse_iso_time
from core.acl import Acl

READ_ROLES = frozenset({"read", "write", "owner"})

USER_CLAIM = "i:0#.f|membership|"
M365_GROUP_CLAIM = "c:0o.c|federateddirectoryclaimprovider|"
SECURITY_GROUP_CLAIM = "c:0t.c|tenant|"
EVERYONE_EXCEPT_EXTERNAL_CLAIM = "c:0-.f|rolemanager|spo-grid-all-users/"
EVERYONE_CLAIM = "c:0(.s|true"
OWNERS_SUFFIX = "_o"


@dataclass(frozen=True)
class LoginPrincipal:
    """What a SharePoint login name denotes."""

    kind: Literal["user", "group", "owners", "tenant", "unknown"]
    value: str = ""  # the UPN (lower-case) or the Entra group id


def parse_login_name(login: str) -> LoginPrincipal:
    """Classify a SharePoint claims login name (``i:0#.f|membership|bob@contoso.com`` ...)."""
    login = (login or "").strip()
    lowered = login.lower()
    if lowered.startswith(USER_CLAIM):
        return LoginPrincipal("user", lowered[len(USER_CLAIM) :])
    for prefix in (M365_GROUP_CLAIM, SECURITY_GROUP_CLAIM):
        if lowered.startswith(prefix):
            value = lowered[len(prefix) :]
            if prefix == M365_GROUP_CLAIM and value.endswith(OWNERS_SUFFIX):
                return LoginPrincipal("owners", value[: -len(OWNERS_SUFFIX)])
            return LoginPrincipal("group", value)
    if lowered.startswith(EVERYONE_EXCEPT_EXTERNAL_CLAIM) or lowered == EVERYONE_CLAIM:
        # "Everyone" also admits guests; the tenant token (members only) is narrower: safe.
        return LoginPrincipal("tenant")
    return LoginPrincipal("unknown", login)


def owners_group_id(group_id: str) -> str:
    """The pseudo group id for "owners of an M365 group" (SharePoint's ``{guid}_o`` login)."""
    return f"{group_id.lower()}{OWNERS_SUFFIX}"


@dataclass
class GroupRefs:
    """The groups an ACL named, so group sync knows what to expand."""

    groups: set[str] = field(default_factory=set)  # Entra group ids
    owners: set[str] = field(default_factory=set)  # Entra group ids whose owners are granted
    site_groups: dict[tuple[str, str], str] = field(default_factory=dict)  # (site, n) -> site URL

    def update(self, other: GroupRefs) -> None:
        self.groups |= other.groups
        self.owners |= other.owners
        self.site_groups.update(other.site_groups)


@dataclass(frozen=True)
class PermissionContext:
    source: str
    tenant_id: str
    site_id: str | None  # the item's site collection id (for site groups)
    site_url: str | None  # where that site's REST API lives
    anonymous_links: Literal["redeemers", "public", "ignore"] = "redeemers"
    organization_links: Literal["redeemers", "tenant", "ignore"] = "redeemers"
    now: datetime | None = None  # when expirations are judged (None: the current time)


def expired(permission: dict[str, Any], now: datetime) -> bool:
    """``expirationDateTime`` has passed (``0001-01-01T00:00:00Z`` means never)."""
    value = permission.get("expirationDateTime")
    if not isinstance(value, str) or not value.strip():
        return False
    when = parse_iso_time(value.strip())
    if when is None:
        return True  # an expiry we cannot read: grant nothing (fail closed)
    if when.year <= 1:
        return False
    return when <= now


class _Grants:
    def __init__(self, ctx: PermissionContext) -> None:
        self.ctx = ctx
        self.users: set[str] = set()
        self.groups: set[str] = set()
        self.public = False
        self.refs = GroupRefs()

    def tenant(self) -> None:
        self.groups.add(principals.tenant_token(self.ctx.source, self.ctx.tenant_id))

    def login(self, login: str) -> None:
        who = parse_login_name(login)
        source = self.ctx.source
        if who.kind == "user" and who.value:
            self.users.add(principals.email(who.value))
        elif who.kind == "group" and who.value:
            self.groups.add(principals.group_token(source, who.value))
            self.refs.groups.add(who.value)
        elif who.kind == "owners" and who.value:
            self.groups.add(principals.group_token(source, owners_group_id(who.value)))
            self.refs.owners.add(who.value)
        elif who.kind == "tenant":
            self.tenant()

    def identity_set(self, identities: dict[str, Any] | None) -> None:
        if not isinstance(identities, dict):
            return
        source = self.ctx.source
        user = identities.get("user")
        if isinstance(user, dict):
            if user.get("email"):
                self.users.add(principals.email(str(user["email"])))
            if user.get("id"):
                self.groups.add(principals.user_token(source, str(user["id"])))
        group = identities.get("group")
        if isinstance(group, dict) and group.get("id"):
            group_id = str(group["id"]).lower()
            self.groups.add(principals.group_token(source, group_id))
            self.refs.groups.add(group_id)
        site_user = identities.get("siteUser")
        if isinstance(site_user, dict):
            if site_user.get("email"):
                self.users.add(principals.email(str(site_user["email"])))
            if site_user.get("loginName"):
                self.login(str(site_user["loginName"]))
        site_group = identities.get("siteGroup")
        if isinstance(site_group, dict) and str(site_group.get("id") or "").strip():
            number = str(site_group["id"]).strip()
            if self.ctx.site_id:  # outside a site (personal OneDrive) a site group is unresolvable
                self.groups.add(principals.site_group_token(source, self.ctx.site_id, number))
                if self.ctx.site_url:
                    self.refs.site_groups[(self.ctx.site_id.lower(), number)] = self.ctx.site_url
        # `application` and `device` identities never read through Trove: ignored.

    def grantees(self, permission: dict[str, Any]) -> None:
        v2 = permission.get("grantedToV2")
        many = permission.get("grantedToIdentitiesV2")
        # The v1 properties are deprecated; read them only when v2 is absent.
        if v2 is None and many is None:
            v2, many = permission.get("grantedTo"), permission.get("grantedToIdentities")
        self.identity_set(v2)
        for identities in many or []:
            self.identity_set(identities)

    def permission(self, permission: dict[str, Any]) -> None:
        roles = {str(r).lower() for r in permission.get("roles") or []}
        if not roles & READ_ROLES:
            return
        if expired(permission, self.ctx.now or datetime.now(UTC)):
            return
        link = permission.get("link")
        if isinstance(link, dict):
            scope = str(link.get("scope") or "").lower()
            if scope == "anonymous":
                if self.ctx.anonymous_links == "public":
                    self.public = True
                if self.ctx.anonymous_links != "ignore":
                    self.grantees(permission)
            elif scope == "organization":
                if self.ctx.organization_links == "tenant":
                    self.tenant()
                if self.ctx.organization_links != "ignore":
                    self.grantees(permission)
            elif scope == "users":
                self.grantees(permission)
            # existingAccess (and any unknown scope) grants nothing.
            return
        self.grantees(permission)

    def acl(self) -> Acl:
        if not (self.users or self.groups or self.public):
            return Acl.empty()
        return Acl(
            allow_users=frozenset(self.users),
            allow_groups=frozenset(self.groups),
            public=self.public,
        )


def map_permissions(
    permissions: Iterable[dict[str, Any]], ctx: PermissionContext
) -> tuple[Acl, GroupRefs]:
    """The read ACL of an item from its Graph permissions, and the groups it names."""
    grants = _Grants(ctx)
    for permission in permissions:
        if isinstance(permission, dict):
            grants.permission(permission)
    return grants.acl(), grants.refs
