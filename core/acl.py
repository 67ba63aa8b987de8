"""Access control: who may read a chunk.

The semantics, in one place (every backend implements exactly this):

* A chunk's :class:`Acl` lists allowed users and groups, denied users and groups,
  an optional tenant and a ``public`` flag.
* A :class:`Principal` (user, groups, optional tenant) may read a chunk when
  1. the chunk has no tenant, or its tenant equals the principal's tenant; and
  2. the chunk is public, or allows the user, or allows one of the groups; and
  3. no deny applies: the user is not denied and none of the groups is denied.
* Deny wins over allow, including over ``public``.
* An empty ACL allows nobody (fail closed): :meth:`Acl.empty`.
* Optional ``layers`` narrow the grant further: the principal must also match
  at least one user or group of *every* layer (an AND of ORs). This is how
  inherited restrictions are carried — a Confluence page readable by the
  space's readers, restricted to group A, under a parent restricted to bob —
  without expanding groups into users, so a membership change never rewrites
  a chunk. A layer with no entries admits nobody.

Every name is compared in one canonical form (:mod:`core.identity`: NFKC,
case-folded, trimmed), on both sides: a :class:`Principal` and an :class:`Acl`
canonicalise their users, groups and tenant when they are built, so ``Mallory``,
``MALLORY `` and ``ｍａｌｌｏｒｙ`` are all the ``mallory`` a deny names. A name
with no canonical form (a zero-width or control character in it) fails closed:

* a principal holding one is refused (:class:`~core.identity.InvalidIdentity`);
* in an ACL's allow lists or layers it is dropped: it grants nothing;
* in a deny list, or as the tenant, it makes the whole ACL admit nobody. The
  entry cannot be dropped (whoever it was meant to deny would get in) nor
  matched (nobody can present it), so the document is withheld from everyone
  until its source or rule is fixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.identity import (
    IDENTITY_FORM,
    InvalidIdentity,
    canonical_group,
    canonical_tenant,
    canonical_user,
)

log = logging.getLogger(__name__)

Canonical = Callable[[object], str]


def _is_blank(value: object) -> bool:
    """An absent or all-whitespace entry: it names nobody, so it is skipped, not refused."""
    return value is None or (isinstance(value, str) and not value.strip())


def _canonical_names(
    values: Iterable[object] | None, canonical: Canonical
) -> tuple[frozenset[str], list[object]]:
    """The canonical forms of ``values``, and the entries that have none."""
    names: set[str] = set()
    refused: list[object] = []
    for value in values or ():
        if _is_blank(value):
            continue
        try:
            names.add(canonical(value))
        except InvalidIdentity:
            refused.append(value)
    return frozenset(names), refused


def _strict_names(values: Iterable[object] | None, canonical: Canonical) -> frozenset[str]:
    """The canonical forms of ``values``; :class:`InvalidIdentity` for the first that has none."""
    return frozenset(canonical(value) for value in values or () if not _is_blank(value))


def _granting_names(
    values: Iterable[object] | None, canonical: Canonical, what: str
) -> frozenset[str]:
    """Names that grant access: one with no canonical form is dropped (it grants nothing)."""
    names, refused = _canonical_names(values, canonical)
    if refused:
        log.warning("ACL: %s %s dropped: no canonical form", what, ", ".join(map(repr, refused)))
    return names


@dataclass(frozen=True)
class Principal:
    """The identity a search runs as. Built only from verified credentials or the CLI."""

    user: str
    groups: frozenset[str] = field(default_factory=frozenset)
    tenant: str | None = None

    def __post_init__(self) -> None:
        if _is_blank(self.user):
            raise InvalidIdentity("a principal needs a non-empty user id")
        object.__setattr__(self, "user", canonical_user(self.user))
        object.__setattr__(self, "groups", _strict_names(self.groups, canonical_group))
        tenant = None if self.tenant in (None, "") else canonical_tenant(self.tenant)
        object.__setattr__(self, "tenant", tenant)

    @classmethod
    def of(cls, user: str, groups: Iterable[str] = (), tenant: str | None = None) -> Principal:
        return cls(user=user, groups=frozenset(groups), tenant=tenant or None)


@dataclass(frozen=True, order=True)
class AclLayer:
    """One restriction layer: the principal must be one of ``users`` or in one of ``groups``."""

    users: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # A layer only admits, so a name with no canonical form is dropped: it narrows.
        object.__setattr__(self, "users", _granting_names(self.users, canonical_user, "user"))
        object.__setattr__(self, "groups", _granting_names(self.groups, canonical_group, "group"))

    def admits(self, principal: Principal) -> bool:
        return principal.user in self.users or bool(principal.groups & self.groups)

    def to_dict(self) -> dict[str, list[str]]:
        return {"users": sorted(self.users), "groups": sorted(self.groups)}

    def sort_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(sorted(self.users)), tuple(sorted(self.groups))


def _normalise_layers(layers: Iterable[AclLayer] | None) -> tuple[AclLayer, ...]:
    unique = {layer.sort_key(): layer for layer in (layers or ())}
    return tuple(unique[key] for key in sorted(unique))


@dataclass(frozen=True)
class Acl:
    """Read permissions carried by every chunk."""

    allow_users: frozenset[str] = field(default_factory=frozenset)
    allow_groups: frozenset[str] = field(default_factory=frozenset)
    deny_users: frozenset[str] = field(default_factory=frozenset)
    deny_groups: frozenset[str] = field(default_factory=frozenset)
    tenant: str | None = None
    public: bool = False
    layers: tuple[AclLayer, ...] = ()

    def __post_init__(self) -> None:
        deny_users, bad_users = _canonical_names(self.deny_users, canonical_user)
        deny_groups, bad_groups = _canonical_names(self.deny_groups, canonical_group)
        tenant, bad_tenant = _canonical_tenant(self.tenant)
        if bad_users or bad_groups or bad_tenant:
            # Deny more, not less: see the module doc.
            refused = [*bad_users, *bad_groups, *bad_tenant]
            log.warning(
                "ACL admits nobody: %s has no canonical form", ", ".join(map(repr, refused))
            )
            self._become_empty()
            return
        set_ = object.__setattr__
        set_(self, "allow_users", _granting_names(self.allow_users, canonical_user, "user"))
        set_(self, "allow_groups", _granting_names(self.allow_groups, canonical_group, "group"))
        set_(self, "deny_users", deny_users)
        set_(self, "deny_groups", deny_groups)
        set_(self, "tenant", tenant)
        set_(self, "layers", _normalise_layers(self.layers))

    def _become_empty(self) -> None:
        for name in ("allow_users", "allow_groups", "deny_users", "deny_groups"):
            object.__setattr__(self, name, frozenset())
        object.__setattr__(self, "tenant", None)
        object.__setattr__(self, "public", False)
        object.__setattr__(self, "layers", ())

    @classmethod
    def empty(cls) -> Acl:
        """An ACL that nobody can read: the fail-closed default."""
        return cls()

    @classmethod
    def public_acl(cls, tenant: str | None = None) -> Acl:
        return cls(public=True, tenant=tenant)

    @property
    def grants_anyone(self) -> bool:
        """False when no principal at all could read the chunk (fail-closed ACL)."""
        base = self.public or bool(self.allow_users) or bool(self.allow_groups)
        return base and all(layer.users or layer.groups for layer in self.layers)

    def permits(self, principal: Principal) -> bool:
        if self.tenant is not None and self.tenant != principal.tenant:
            return False
        if principal.user in self.deny_users or principal.groups & self.deny_groups:
            return False
        allowed = (
            self.public
            or principal.user in self.allow_users
            or bool(principal.groups & self.allow_groups)
        )
        return allowed and all(layer.admits(principal) for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "allow_users": sorted(self.allow_users),
            "allow_groups": sorted(self.allow_groups),
            "deny_users": sorted(self.deny_users),
            "deny_groups": sorted(self.deny_groups),
            "tenant": self.tenant,
            "public": self.public,
        }
        # Only when present, so the fingerprints of layer-free ACLs never change.
        if self.layers:
            data["layers"] = [layer.to_dict() for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Acl:
        if not data:
            return cls.empty()
        return cls(
            allow_users=frozenset(data.get("allow_users") or ()),
            allow_groups=frozenset(data.get("allow_groups") or ()),
            deny_users=frozenset(data.get("deny_users") or ()),
            deny_groups=frozenset(data.get("deny_groups") or ()),
            tenant=data.get("tenant"),
            public=bool(data.get("public", False)),
            layers=tuple(
                AclLayer(frozenset(layer.get("users") or ()), frozenset(layer.get("groups") or ()))
                for layer in data.get("layers") or ()
            ),
        )

    def fingerprint(self) -> str:
        """A stable hash of the ACL: equal ACLs give equal fingerprints."""
        data = self.to_dict()
        if self.deny_users or self.deny_groups:
            # A deny stored before names had one canonical form may hold another
            # spelling, which an index comparing names exactly would no longer match.
            # The form is part of such an ACL's fingerprint, so the next ingest sees
            # it as changed and rewrites it (an ACL-only update).
            data["identity_form"] = IDENTITY_FORM
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _canonical_tenant(value: object) -> tuple[str | None, list[object]]:
    """(the canonical tenant or None, [value] when it has no canonical form).

    Only ``None`` and ``""`` mean "no tenant": any other unusable value must not
    widen the ACL to every tenant.
    """
    if value is None or value == "":
        return None, []
    try:
        return canonical_tenant(value), []
    except InvalidIdentity:
        return None, [value]
