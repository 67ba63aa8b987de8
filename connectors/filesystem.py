"""Filesystem connector: a folder tree, filtered by include/exclude globs.

* Document ids are ``{source}:{relative path}``: stable across runs, so a
  re-sync updates rather than duplicates; a rename is a delete plus an add.
* The version stamp is a SHA-256 of the content. Hashing is skipped for a file
  whose size and modification time equal what the caller saw last time
  (``known``), so an unchanged tree re-scans without reading file bodies.
* Hidden files and folders (a name starting with ``.``) are skipped unless a
  pattern names them explicitly; symbolic links are not followed out of the root.
* Files carry no native permissions here: their ACL comes from the source's
  rules in ``trove.yaml`` (see :mod:`pipelines.secure`).
* Under the connector contract (:mod:`connectors.base`) every run is a full
  listing (one batch, ``complete``); the cursor is the previous scan's
  size/mtime/hash table, which is what lets an unchanged tree skip hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wcmatch import glob as wglob

from connectors.base import ChangeBatch, DocumentStamp
from connectors.errors import ConnectorError, DocumentGone
from connectors.models import DocumentFailure, SourceDocument
from trove.acl import Acl
from trove.config import SourceConfig

_GLOB_FLAGS = wglob.GLOBSTAR | wglob.NEGATE | wglob.BRACE


@dataclass(frozen=True)
class FileStat:
    """What the previous scan recorded for a path, to skip re-hashing unchanged files."""

    size: int
    mtime_ns: int
    version: str


@dataclass(frozen=True)
class ScanResult:
    documents: list[SourceDocument]
    failures: list[DocumentFailure]
    stats: dict[str, FileStat]  # path -> what was seen now, for the next scan's `known`


def document_id(source: str, relative_path: str) -> str:
    return f"{source}:{relative_path}"


def matches(relative_path: str, patterns: list[str]) -> bool:
    return any(wglob.globmatch(relative_path, p, flags=_GLOB_FLAGS) for p in patterns)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class FilesystemConnector:
    """Lists the documents of one ``type: filesystem`` source."""

    def __init__(self, config: SourceConfig) -> None:
        if config.type != "filesystem":
            raise ValueError(f"FilesystemConnector needs a filesystem source, got {config.type!r}")
        self.config = config
        self.source = config.name
        self.root = Path(config.path)  # type: ignore[arg-type]  # validated: filesystem has a path

    def _walk(self) -> Iterator[tuple[str, Path]]:
        root_real = self.root.resolve()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                if full.is_symlink():
                    try:
                        full.resolve().relative_to(root_real)
                    except (ValueError, OSError):
                        continue  # a link out of the source root is never followed
                rel = full.relative_to(self.root).as_posix()
                yield rel, full

    def fingerprint(self) -> str:
        """A cheap digest of the included files' paths, sizes and modification times.

        It changes whenever a file is added, removed, renamed or rewritten, without
        reading any file body: what the change sensor polls.
        """
        if not self.root.is_dir():
            raise ConnectorError(
                f"source {self.config.name!r}: folder not found or not a directory: {self.root}"
            )
        digest = hashlib.sha256()
        for rel, full in self._walk():
            if not matches(rel, self.config.include) or matches(rel, self.config.exclude):
                continue
            try:
                st = full.stat()
            except OSError:
                continue
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:32]

    def _document(
        self, rel: str, full: Path, previous: FileStat | None
    ) -> tuple[SourceDocument, FileStat]:
        """One file as a document; re-hashed only when its size or mtime changed. OSError passes."""
        st = full.stat()
        if previous and (previous.size, previous.mtime_ns) == (st.st_size, st.st_mtime_ns):
            version = previous.version
        else:
            version = _hash_file(full)
        doc = SourceDocument(
            doc_id=document_id(self.config.name, rel),
            source=self.config.name,
            path=rel,
            uri=full.resolve().as_uri(),
            title=full.stem,
            version=version,
            size=st.st_size,
            modified_at=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            doc_type=full.suffix.lower().lstrip("."),
            acl=Acl.empty(),
            local_path=full,
        )
        return doc, FileStat(st.st_size, st.st_mtime_ns, version)

    def scan(self, known: Mapping[str, FileStat] | None = None) -> ScanResult:
        """Every included document under the root, with its version stamp.

        Raises :class:`ConnectorError` when the root itself is missing or unreadable;
        a file that cannot be read becomes a :class:`DocumentFailure`.
        """
        if not self.root.is_dir():
            raise ConnectorError(
                f"source {self.config.name!r}: folder not found or not a directory: {self.root}"
            )
        known = known or {}
        documents: list[SourceDocument] = []
        failures: list[DocumentFailure] = []
        stats: dict[str, FileStat] = {}
        for rel, full in self._walk():
            if not matches(rel, self.config.include) or matches(rel, self.config.exclude):
                continue
            try:
                doc, stat = self._document(rel, full, known.get(rel))
            except OSError as exc:
                doc_id = document_id(self.config.name, rel)
                failures.append(DocumentFailure(doc_id, rel, f"unreadable: {exc.strerror or exc}"))
                continue
            stats[rel] = stat
            documents.append(doc)
        return ScanResult(documents=documents, failures=failures, stats=stats)

    # -- the connector contract (connectors.base) -----------------------------------

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        previous = json.loads(cursor) if cursor else {}
        known = {path: FileStat(*values) for path, values in previous.items()}
        scan = self.scan(known=known)
        stats = {p: [s.size, s.mtime_ns, s.version] for p, s in scan.stats.items()}
        yield ChangeBatch(
            documents=scan.documents,
            failures=scan.failures,
            cursor=json.dumps(stats, sort_keys=True),
            complete=True,
        )

    def list_ids(self) -> Iterator[DocumentStamp]:
        for doc in self.scan().documents:
            yield DocumentStamp(doc.doc_id, doc.version, doc.acl, doc.path)

    def fetch(self, doc_id: str) -> SourceDocument:
        prefix = f"{self.config.name}:"
        rel = doc_id[len(prefix) :] if doc_id.startswith(prefix) else None
        excluded = rel is None or matches(rel, self.config.exclude)
        if excluded or not matches(rel, self.config.include):
            raise DocumentGone(f"{doc_id!r} is not a document of source {self.config.name!r}")
        full = self.root / rel
        hidden = any(part.startswith(".") for part in Path(rel).parts)
        try:
            inside = full.resolve().is_relative_to(self.root.resolve())
            if hidden or not inside or not full.is_file():
                raise DocumentGone(f"{doc_id!r}: no such file under {self.root}")
            return self._document(rel, full, None)[0]
        except OSError as exc:
            raise ConnectorError(f"{doc_id!r}: unreadable: {exc.strerror or exc}") from exc

    def close(self) -> None:
        pass
