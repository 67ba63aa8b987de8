"""Principal tokens that connector ACLs carry, prefixed by source so two systems never collide.

* A person known by e-mail is an ``allow_users`` entry: the lower-cased address,
  which is what a verified caller presents.
* A person known only by a native id (a Confluence ``accountId`` with a hidden
  e-mail, an Entra object id) is a *token* in ``allow_groups``:
  ``{source}:user:{id}``. The group directory maps the caller's e-mail to it at
  query time.
* A group is ``{source}:group:{id}`` (lower-cased); a SharePoint site group is
  ``{source}:sitegroup:{site}:{n}`` because its number is only unique per site.
"""

from __future__ import annotations


def email(value: str) -> str:
    return value.strip().lower()


def user_token(source: str, native_id: str) -> str:
    return f"{source}:user:{native_id.strip()}"


def group_token(source: str, group_id: str) -> str:
    return f"{source}:group:{group_id.strip().lower()}"


def site_group_token(source: str, site_id: str, number: int | str) -> str:
    return f"{source}:sitegroup:{site_id.strip().lower()}:{number}"


def tenant_token(source: str, tenant_id: str) -> str:
    return f"{source}:tenant:{tenant_id.strip().lower()}"
