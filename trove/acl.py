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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def _names(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (values or ()) if v and v.strip())


@dataclass(frozen=True)
class Principal:
    """The identity a search runs as. Built only from verified credentials or the CLI."""

    user: str
    groups: frozenset[str] = field(default_factory=frozenset)
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not self.user or not self.user.strip():
            raise ValueError("a principal needs a non-empty user id")
        object.__setattr__(self, "groups", _names(self.groups))

    @classmethod
    def of(cls, user: str, groups: Iterable[str] = (), tenant: str | None = None) -> Principal:
        return cls(user=user, groups=frozenset(groups), tenant=tenant or None)


@dataclass(frozen=True, order=True)
class AclLayer:
    """One restriction layer: the principal must be one of ``users`` or in one of ``groups``."""

    users: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _names(self.users))
        object.__setattr__(self, "groups", _names(self.groups))

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
        for name in ("allow_users", "allow_groups", "deny_users", "deny_groups"):
            object.__setattr__(self, name, _names(getattr(self, name)))
        object.__setattr__(self, "tenant", self.tenant or None)
        object.__setattr__(self, "layers", _normalise_layers(self.layers))

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
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
