"""ACL tagging: decide each document's read permissions from the source's rules.

The rule semantics (first matching glob wins, then native permissions, then the
source's ``default``, else nobody; every reading of every governing path must
allow a reader) live in the ground layer, :mod:`core.acl_policy`, because the
web connector needs the same answer when it chooses among a URL's readings.
This stage applies them: :class:`AclPolicy` is built once per source from its
``acl`` block, and the scan tags each document with ``policy.acl_for(doc)``.
"""

from __future__ import annotations

from core.acl_policy import AclPolicy, intersect, rule_paths

__all__ = ["AclPolicy", "intersect", "rule_paths"]
