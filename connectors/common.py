"""Pieces every connector needs alike: its cursor's envelope, times as sources write
them, and URLs that are safe to put in a message.

* **Cursors** are JSON objects with a version (``"v"``), written compactly with
  sorted keys (:func:`dump_cursor`). :func:`load_cursor` returns the object or
  raises :class:`UnreadableCursor` (not JSON, not an object, another version);
  what then happens is the connector's choice: start over, or refuse.
* **Times**: an HTTP-date (``Date``, ``Retry-After``, ``Last-Modified``) and an
  ISO 8601 stamp (``...Z`` or with an offset) as aware datetimes; a time without
  a zone is taken as UTC, and one that cannot be read is ``None``.
* **URLs in messages** lose their user-info (``user:password@``), their query
  string and their fragment, which may carry credentials (SAS signatures, OData
  skip tokens, ``access_token=``).
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.errors import TroveError

# `scheme://` (or a scheme-relative `//`), then user-info up to the authority's last `@`.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)[^/?#]*@")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


class UnreadableCursor(TroveError, ValueError):
    """A cursor this code did not write, or wrote in another version; the message says which."""


def dump_cursor(fields: Mapping[str, Any], *, version: int) -> str:
    """``fields`` and ``"v": version`` as one compact JSON object."""
    return json.dumps({**fields, "v": version}, sort_keys=True, separators=(",", ":"))


def load_cursor(cursor: str, *, version: int) -> dict[str, Any]:
    """The object :func:`dump_cursor` wrote (``"v"`` included).

    :raises UnreadableCursor: not JSON, not an object, or not ``version``.
    """
    try:
        data = json.loads(cursor)
    except ValueError:
        raise UnreadableCursor("the cursor is not JSON") from None
    if not isinstance(data, dict):
        raise UnreadableCursor("the cursor is not a JSON object")
    if data.get("v") != version:
        raise UnreadableCursor(f"cursor version {data.get('v')!r}, expected {version}")
    return data


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP-date (``Wed, 21 Oct 2026 07:28:00 GMT``) as an aware datetime."""
    if not value:
        return None
    try:
        return _aware(email.utils.parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


def parse_iso_time(value: object) -> datetime | None:
    """An ISO 8601 time (``2026-02-02T12:00:00Z``, ``...+01:00``) as an aware datetime.

    Anything but a non-empty string is ``None``, as is text that is not such a time.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def redact_url(url: object) -> str:
    """The URL without its user-info, query string and fragment, for messages and logs.

    ``https://bob:pw@host/a?sig=x#t`` is ``https://host/a``. The user-info ends at
    the last ``@`` before the path, so a password holding an ``@`` goes too.
    """
    before_query = _QUERY_OR_FRAGMENT.split(str(url), maxsplit=1)[0]
    return _USERINFO.sub(r"\1", before_query, count=1)
