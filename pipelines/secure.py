"""ACL tagging: decide each document's read permissions from the source's rules.

Rules are tried in order; the first whose glob matches the document's path
(relative to the source root) wins. No match falls to the source's ``default``;
no default means an empty ACL, which nobody can read (fail closed). A rule
replaces native permissions the connector reported; with no rule and no
default, native permissions (when a connector has them) apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.filesystem import matches
from connectors.models import SourceDocument
from trove.acl import Acl
from trove.config import SourceAclConfig


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

    def acl_for_path(self, path: str, native: Acl | None = None) -> Acl:
        for pattern, acl in self.rules:
            if matches(path, [pattern]):
                return acl
        if native is not None and native.grants_anyone:
            return native
        return self.default if self.default is not None else Acl.empty()

    def acl_for(self, doc: SourceDocument) -> Acl:
        return self.acl_for_path(doc.path, doc.acl)
