"""Principal tokens that connector ACLs carry, prefixed by source so two systems never collide.

* A person known by e-mail is an ``allow_users`` entry: the address in the
  canonical form of :mod:`core.identity` (NFKC, case-folded, trimmed), which
  is the form a verified caller's identity is compared in.
* A person known only by a native id (a Confluence ``accountId`` with a hidden
  e-mail, an Entra object id) is a *token* in ``allow_groups``:
  ``{source}:user:{id}``. The group directory maps the caller's e-mail to it at
  query time.
* A group is ``{source}:group:{id}``; a SharePoint site group is
  ``{source}:sitegroup:{site}:{n}`` because its number is only unique per site.

Every token is returned whole in canonical form too (the source name
included), the form ACLs, the group directory and principals compare in. A
value with no canonical form (a zero-width or control character in it) is
returned trimmed but otherwise as given, so that one odd address never stops
a source's listing: every ACL and the group directory drop such a name (it
grants nothing, and nobody can present it).
"""

from __future__ import annotations

from collections.abc import Callable

from core.identity import InvalidIdentity, canonical_group, canonical_user


def email(value: str) -> str:
    return _canonical_or_given(value, canonical_user)


def user_token(source: str, native_id: str) -> str:
    return _canonical_or_given(f"{source}:user:{native_id.strip()}", canonical_user)


def group_token(source: str, group_id: str) -> str:
    return _canonical_or_given(f"{source}:group:{group_id.strip()}", canonical_group)


def site_group_token(source: str, site_id: str, number: int | str) -> str:
    return _canonical_or_given(f"{source}:sitegroup:{site_id.strip()}:{number}", canonical_group)


def tenant_token(source: str, tenant_id: str) -> str:
    return _canonical_or_given(f"{source}:tenant:{tenant_id.strip()}", canonical_group)


def _canonical_or_given(value: str, canonical: Callable[[object], str]) -> str:
    try:
        return canonical(value)
    except InvalidIdentity:
        return value.strip()
