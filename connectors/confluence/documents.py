"""How Confluence content is named and shaped for the pipeline (pure functions).

* Ids are ``{source}:page:{page id}`` and ``{source}:att:{attachment id}``:
  Confluence ids survive renames and moves (Onyx's webui-URL ids do not).
* ``path`` is ``SPACEKEY/Ancestor/.../Title`` (attachments add ``/file.pdf``),
  the readable location that ACL-rule and ``include``/``exclude`` globs match
  and citations show. A ``/``
  inside a title is written as ``∕`` (U+2215) so it cannot fake a level.
* A page body is the storage-format XHTML wrapped in a minimal HTML document
  whose ``<title>`` is the page title. ``CDATA`` sections (code and no-format
  macros) are turned into escaped text first: HTML parsers drop CDATA as a
  bogus comment, and the code inside is content worth indexing.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

PAGE = "page"
ATTACHMENT = "att"

_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)


@dataclass(frozen=True)
class Node:
    """A page or folder as far as paths and inheritance need it."""

    id: str
    type: str
    title: str
    parent_id: str | None = None
    parent_type: str | None = None


def node_from_v2(data: dict[str, Any], default_type: str = "page") -> Node:
    parent = data.get("parentId")
    return Node(
        id=str(data["id"]),
        type=str(data.get("type") or default_type),
        title=str(data.get("title") or ""),
        parent_id=str(parent) if parent else None,
        parent_type=str(data.get("parentType") or "page") if parent else None,
    )


def document_id(source: str, kind: str, native_id: str) -> str:
    return f"{source}:{kind}:{native_id}"


def split_doc_id(source: str, value: str) -> tuple[str, str] | None:
    """``(kind, native id)`` for one of this source's ids, else ``None``."""
    prefix = f"{source}:"
    if not value.startswith(prefix):
        return None
    kind, _, native = value[len(prefix) :].partition(":")
    if kind not in (PAGE, ATTACHMENT) or not native:
        return None
    return kind, native


def _segment(title: str) -> str:
    return (title.strip() or "untitled").replace("/", "\u2215")


def page_path(space_key: str, ancestors: list[str], title: str) -> str:
    return "/".join([space_key, *(_segment(t) for t in ancestors), _segment(title)])


def attachment_path(page: str, title: str) -> str:
    return f"{page}/{_segment(title)}"


def extension(title: str) -> str:
    name = title.strip().rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


def page_html(title: str, storage: str) -> bytes:
    body = _CDATA.sub(lambda m: html.escape(m.group(1), quote=False), storage or "")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title, quote=False)}</title></head>"
        f"<body>{body}</body></html>"
    ).encode()


def storage_of(data: dict[str, Any]) -> str:
    """The storage XHTML of a v2 page (``body.storage.value``) or a v1 content result."""
    storage = (data.get("body") or {}).get("storage") or {}
    return str(storage.get("value") or "")
