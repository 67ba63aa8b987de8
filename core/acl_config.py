"""Read permissions as written in ``trove.yaml``: an ACL, and path rules that give one."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, field_validator, model_validator

from core.acl import Acl
from core.config import StrictModel
from core.identity import InvalidIdentity, canonical_group, canonical_tenant, canonical_user


class AclSpec(StrictModel):
    """Read permissions as written in ``trove.yaml``."""

    allow_users: list[str] = Field(default_factory=list)
    allow_groups: list[str] = Field(default_factory=list)
    deny_users: list[str] = Field(default_factory=list)
    deny_groups: list[str] = Field(default_factory=list)
    tenant: str | None = None
    public: bool = False

    @model_validator(mode="after")
    def _names_have_a_canonical_form(self) -> AclSpec:
        # At ingest such a name would be dropped (allow) or shut the ACL to everyone
        # (deny, tenant): a config error naming the rule says why instead.
        match = getattr(self, "match", None)
        where = f"ACL rule {match!r}" if match is not None else "ACL"
        checks = (
            (canonical_user, ("allow_users", "deny_users")),
            (canonical_group, ("allow_groups", "deny_groups")),
        )
        for canonical, fields in checks:
            for name in fields:
                for value in getattr(self, name):
                    if value.strip():
                        _check_identity(canonical, value, f"{where}: {name} entry {value!r}")
        if self.tenant:
            _check_identity(canonical_tenant, self.tenant, f"{where}: tenant {self.tenant!r}")
        return self

    def to_acl(self) -> Acl:
        return Acl(
            allow_users=frozenset(self.allow_users),
            allow_groups=frozenset(self.allow_groups),
            deny_users=frozenset(self.deny_users),
            deny_groups=frozenset(self.deny_groups),
            tenant=self.tenant,
            public=self.public,
        )


def _check_identity(canonical: Callable[[object], str], value: str, where: str) -> None:
    try:
        canonical(value)
    except InvalidIdentity as exc:
        raise ValueError(f"{where}: {exc}") from None


class AclRule(AclSpec):
    """An ACL for the documents whose path (relative to the source root) matches ``match``."""

    match: str

    @field_validator("match")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an ACL rule needs a non-empty `match` glob")
        return value


class SourceAclConfig(StrictModel):
    """Rules are tried in order and the first match wins; no match falls to ``default``.

    Without ``default``, a document that no rule matches gets an empty ACL and is
    never retrievable (fail closed).
    """

    default: AclSpec | None = None
    rules: list[AclRule] = Field(default_factory=list)
