"""What a connector hands to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.acl import Acl


@dataclass(frozen=True)
class FileIdentity:
    """Which file a scan read: device, inode, size and modification time.

    The parse stage opens ``local_path`` again later in the run; it refuses the
    file unless these still match (:mod:`pipelines.local_file`), so a file or a
    parent folder swapped for a link in between is never read in its place.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: Any) -> FileIdentity:
        """From an ``os.stat_result``."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def to_dict(self) -> dict[str, int]:
        return {"dev": self.dev, "ino": self.ino, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FileIdentity | None:
        if not data:
            return None
        return cls(int(data["dev"]), int(data["ino"]), int(data["size"]), int(data["mtime_ns"]))


@dataclass(frozen=True)
class SourceDocument:
    """One document as the source system sees it, before parsing.

    ``doc_id`` is stable across runs and renames: ``{source}:{native id}``
    (``{source}:{relative path}`` for files). ``version`` changes whenever the
    content changes (a content hash for files, a page version, an ETag).
    The bytes are either on disk (``local_path``, local sources), inline
    (``content``), or neither, in which case the pipeline asks the connector's
    ``fetch`` for them only when the version is new.
    """

    doc_id: str
    source: str
    path: str  # a readable location: relative path, space/page titles, bucket/key, URL path
    uri: str  # where a person opens it (file URI, web URL)
    title: str
    version: str
    size: int
    modified_at: datetime | None
    doc_type: str  # lower-case file extension without the dot ("pdf", "md", "html", ...)
    acl: Acl
    local_path: Path | None = None  # where the bytes can be read, for local sources
    content: bytes | None = None  # the bytes, for remote sources that return them inline
    author: str | None = None
    # For ``local_path``: the file the scan read, checked again before parsing.
    identity: FileIdentity | None = None
    # Every path whose ACL rules govern the document, ``path`` first, when there is
    # more than one (a followed symbolic link: its own path and its target's);
    # empty means ``path`` alone. See :func:`core.acl_policy.rule_paths`.
    rule_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocumentFailure:
    """A document that could not be read or parsed, with the reason."""

    doc_id: str
    path: str
    reason: str
