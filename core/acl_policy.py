"""A source's ACL rules applied to paths: who may read a document.

Rules are tried in order; the first whose glob matches the document's path
(relative to the source root) wins. No match falls to the source's ``default``;
no default means an empty ACL, which nobody can read (fail closed). A rule
replaces native permissions the connector reported; with no rule and no
default, native permissions (when a connector has them) apply.

A path may name its place in more than one way, and a document may be reached
at more than one path. The ACL is what *every* one of them allows, so another
spelling can only narrow who reads a document, never widen it:

* each path is read as written, as the place it names (``hr//x``, ``hr/./x``
  and ``handbook/../hr/x`` are ``hr/x``; Unicode NFC), and that place ignoring
  case (``HR/x``): see :class:`core.paths.Reading`;
* a document may name more paths that govern it (:func:`rule_paths`): a
  followed symbolic link is governed by its own path and its target's.

When the readings disagree the document gets the intersection (:func:`intersect`).
The scan (:mod:`pipelines.stages`) tags each document with this policy; the web
connector uses it too, to pick the strictest of the paths a server may read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from typing import Protocol

from core.acl import Acl, AclLayer
from core.acl_config import SourceAclConfig
from core.paths import RULE_READINGS, Reading


class RuledDocument(Protocol):
    """What the rules read from a document (a connector's ``SourceDocument``)."""

    @property
    def path(self) -> str: ...

    @property
    def acl(self) -> Acl: ...  # the permissions its source reported

    @property
    def rule_paths(self) -> tuple[str, ...]: ...  # every governing path, or () for `path`


def rule_paths(doc: RuledDocument) -> tuple[str, ...]:
    """The paths whose rules apply to a document: its own, plus a followed link's others."""
    return doc.rule_paths or (doc.path,)


def intersect(a: Acl, b: Acl) -> Acl:
    """An ACL admitting exactly the principals both admit.

    ``b``'s allow list becomes a layer of ``a`` (its own layers carried over),
    the deny lists are united, and two different tenants admit nobody.
    """
    if a == b:
        return a
    if a.tenant and b.tenant and a.tenant != b.tenant:
        return Acl.empty()
    if a.public and not b.public:
        a, b = b, a  # a public ACL adds no layer: the other one's allow list is the base
    layers = (*a.layers, *b.layers)
    if not b.public:
        layers = (*layers, AclLayer(b.allow_users, b.allow_groups))
    return Acl(
        allow_users=a.allow_users,
        allow_groups=a.allow_groups,
        deny_users=a.deny_users | b.deny_users,
        deny_groups=a.deny_groups | b.deny_groups,
        tenant=a.tenant or b.tenant,
        public=a.public,
        layers=layers,
    )


@dataclass(frozen=True)
class AclPolicy:
    rules: tuple[tuple[str, Acl], ...]
    default: Acl | None

    @classmethod
    def from_config(cls, config: SourceAclConfig) -> AclPolicy:
        return cls(
            rules=tuple((rule.match, rule.to_acl()) for rule in config.rules),
            default=config.default.to_acl() if config.default else None,
        )

    @property
    def patterns(self) -> tuple[str, ...]:
        """The rules' globs, in order."""
        return tuple(pattern for pattern, _ in self.rules)

    def _acl_by(self, reading: Reading, path: str, native: Acl | None) -> Acl:
        form = reading.form(path)
        for pattern, acl in self.rules:
            if reading.match(form, (pattern,)):
                return acl
        if native is not None and native.grants_anyone:
            return native
        return self.default if self.default is not None else Acl.empty()

    def acl_for_paths(self, paths: Iterable[str], native: Acl | None = None) -> Acl:
        """What every reading of every path allows (the module doc)."""
        acls = [self._acl_by(r, p, native) for p in paths for r in RULE_READINGS]
        # Equal ACLs collapse, so a path every reading agrees on keeps its plain ACL.
        distinct = list(dict.fromkeys(acls))
        return reduce(intersect, distinct) if distinct else Acl.empty()

    def acl_for_path(self, path: str, native: Acl | None = None) -> Acl:
        return self.acl_for_paths((path,), native)

    def acl_for(self, doc: RuledDocument) -> Acl:
        return self.acl_for_paths(rule_paths(doc), doc.acl)
