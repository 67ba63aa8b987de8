"""Filesystem connector: a folder tree, filtered by include/exclude globs.

* Document ids are ``{source}:{relative path}``: stable across runs, so a
  re-sync updates rather than duplicates; a rename is a delete plus an add.
* The version stamp is a SHA-256 of the content. Hashing is skipped for a file
  whose size and modification time equal what the caller saw last time
  (``known``), so an unchanged tree re-scans without reading file bodies.
* Hidden files and folders (a name starting with ``.``) are always skipped.
* Files carry no native permissions here: their ACL comes from the source's
  rules in ``trove.yaml`` (see :mod:`core.acl_policy`).
* Under the connector contract (:mod:`connectors.base`) every run is a full
  listing (one batch, ``complete``); the cursor is the previous scan's
  size/mtime/hash table, which is what lets an unchanged tree skip hashing.

Symbolic links decide what a path may show, so they are handled here once:

* By default a link (to a file or to a folder) is never followed. It is
  reported (:attr:`ScanResult.skipped`, and one warning per scan), not indexed.
* With ``follow_symlinks: true`` a link is followed only when its fully
  resolved target lies inside the resolved source root; dangling links, loops
  and links out of the root are reported and skipped. A followed document is
  governed by every path it is reachable at (the link's, the target's, and
  any linked folder's on the way): each must pass ``include``, none may be
  excluded or hidden, and its ACL is the intersection of the ACLs the rules
  give each of them (``SourceDocument.rule_paths``, :mod:`core.acl_policy`).
  Its id and citation path are the link's path.
* Every read goes through :func:`open_real_file`: one ``openat`` per path
  component with ``O_NOFOLLOW`` from the root's descriptor, so the file read
  is the file that was checked even when a link is swapped in mid-scan.
* A document's ``local_path`` is its target's real path (no link in it when
  listed), and its ``identity`` the device, inode, size and mtime read then.
  :meth:`fetch` returns the bytes read through a checked descriptor. The parse
  stage opens ``local_path`` without following a final link and refuses it
  (``changed_during_sync``) unless its identity still matches, so a file or a
  parent folder swapped for a link after the scan is never read in its place
  (:mod:`pipelines.local_file`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from connectors.base import ChangeBatch, DocumentStamp
from connectors.common import UnreadableCursor, dump_cursor, load_cursor
from connectors.errors import ConnectorError, DocumentGone
from connectors.models import DocumentFailure, FileIdentity, SourceDocument
from connectors.scope import SourceScope
from core.acl import Acl

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
# getattr: these are POSIX-only; without openat the connector refuses to start (_open_root).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO swapped in for a file must not hang the scan.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
_SKIPPED_IN_WARNING = 5


def is_hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/") if part)


# -- documents -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStat:
    """What the previous scan recorded for a path, to skip re-hashing unchanged files."""

    size: int
    mtime_ns: int
    version: str


@dataclass(frozen=True)
class Skipped:
    """A path the scan did not index, with why (a link not followed, a FIFO)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    documents: list[SourceDocument]
    failures: list[DocumentFailure]
    stats: dict[str, FileStat]  # path -> what was seen now, for the next scan's `known`
    skipped: list[Skipped] = dataclasses.field(default_factory=list)


def document_id(source: str, relative_path: str) -> str:
    return f"{source}:{relative_path}"


# -- reading files without following links ---------------------------------------------


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _unique(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def open_real_dir(root_fd: int, real: str) -> int:
    """A descriptor for folder ``real`` (relative, no links in it) under ``root_fd``.

    Each component is opened with ``O_NOFOLLOW`` from its parent's descriptor,
    so a link anywhere on the way fails the open (``ELOOP`` or ``ENOTDIR``).
    """
    fd = os.dup(root_fd)
    try:
        for part in (p for p in real.split("/") if p):
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_real_file(root_fd: int, real: str) -> tuple[int, os.stat_result]:
    """Open regular file ``real`` under ``root_fd`` without following any link.

    :raises OSError: a component is a link (``ELOOP``), missing, unreadable,
        or the file is not a regular file (``EINVAL``).
    """
    parent, _, name = real.rpartition("/")
    dir_fd = open_real_dir(root_fd, parent)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd, st


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while block := os.read(fd, 1 << 20):
        digest.update(block)
    return "sha256:" + digest.hexdigest()


def _read_fd(fd: int, limit: int) -> bytes | None:
    """The whole file, or ``None`` when it holds more than ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while block := os.read(fd, 1 << 20):
        total += len(block)
        if total > limit:
            return None
        chunks.append(block)
    return b"".join(chunks)


def _reason(exc: OSError) -> str:
    # What an O_NOFOLLOW open of a link says (EMLINK on FreeBSD, ENOTDIR with O_DIRECTORY).
    if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        return "a symbolic link, or changed during the scan"
    return exc.strerror or str(exc)


@dataclass(frozen=True)
class _Node:
    """A path as listed, where it really is, and every path that governs it."""

    rel: str  # the listed path: document id and citation
    real: str  # relative to the resolved root, no link in it ("" is the root)
    paths: tuple[str, ...]  # rel first; a followed link adds its target's real path

    def child(self, name: str) -> _Node:
        paths = _unique(_join(p, name) for p in self.paths)
        return _Node(_join(self.rel, name), _join(self.real, name), paths)


_ROOT = _Node("", "", ("",))


def _loops(real: str, ancestors: tuple[str, ...]) -> bool:
    """Whether walking folder ``real`` would enter one of the folders being walked."""
    return not real or any(a == real or a.startswith(f"{real}/") for a in ancestors)


class FilesystemConnector:
    """Lists the documents of one ``type: filesystem`` source (its folder is ``scope.root``)."""

    def __init__(self, scope: SourceScope) -> None:
        if scope.root is None:
            raise ValueError(f"FilesystemConnector needs a folder: source {scope.name!r} has none")
        self.scope = scope
        self.source = scope.name
        self.root = Path(scope.root)
        self.follow_symlinks = scope.follow_symlinks
        # What this instance listed, so fetch can refuse a link retargeted since.
        self._listed: dict[str, tuple[str, ...]] = {}

    # -- walking ----------------------------------------------------------------------

    def _open_root(self) -> tuple[str, int]:
        if os.open not in os.supports_dir_fd or not _NOFOLLOW:
            raise ConnectorError("filesystem sources need openat(2) (Linux, macOS, BSD)")
        root_real = os.path.realpath(self.root)
        try:
            return root_real, os.open(root_real, _DIR_FLAGS & ~_NOFOLLOW)
        except OSError as exc:
            raise ConnectorError(
                f"source {self.source!r}: folder not found or not a directory: {self.root}"
            ) from exc

    def _link_target(self, root_real: str, node: _Node) -> tuple[str | None, str]:
        """The real path of the link at ``node`` inside the root, or ``None`` and why not."""
        try:
            target = os.path.realpath(os.path.join(root_real, node.real), strict=True)
        except (OSError, RuntimeError) as exc:
            loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
            return None, "a loop of links" if loop else "dangling (its target does not exist)"
        if os.path.commonpath([root_real, target]) != root_real:
            return None, "its target is outside the source root"
        real = PurePosixPath(os.path.relpath(target, root_real)).as_posix()
        real = "" if real == "." else real
        if is_hidden(real):
            return None, "its target is hidden"
        return real, ""

    def _follow(self, root_real: str, node: _Node) -> tuple[_Node | None, str]:
        if not self.follow_symlinks:
            return None, "symbolic link, not followed (follow_symlinks is off)"
        real, why = self._link_target(root_real, node)
        if real is None:
            return None, f"symbolic link, not followed: {why}"
        return _Node(node.rel, real, _unique((*node.paths, real))), ""

    def _walk(
        self, root_real: str, root_fd: int, skipped: list[Skipped]
    ) -> Iterator[tuple[_Node, os.stat_result]]:
        """Every regular file under the root, with a stat of it (links per the config)."""
        yield from self._walk_dir(root_real, root_fd, root_fd, _ROOT, ("",), skipped)

    def _walk_dir(
        self,
        root_real: str,
        root_fd: int,
        dir_fd: int,
        node: _Node,
        ancestors: tuple[str, ...],
        skipped: list[Skipped],
    ) -> Iterator[tuple[_Node, os.stat_result]]:
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(node.rel or ".", f"unreadable folder: {_reason(exc)}"))
            return
        folders: list[tuple[_Node, bool]] = []
        # Files first, then each folder, both by name: the order os.walk gave, so a
        # tree's fingerprint is the one it had before.
        for entry in entries:
            if entry.name.startswith("."):
                continue
            found = self._entry(root_real, dir_fd, node.child(entry.name), ancestors)
            if isinstance(found, Skipped):
                skipped.append(found)
            elif found[1] is None:
                folders.append((found[0], found[2]))
            else:
                yield found[0], found[1]
        for folder, linked in folders:
            try:
                # A linked folder is opened from the root along its real path; either
                # way no component may be a link, so a swap since the stat fails here.
                fd = (
                    open_real_dir(root_fd, folder.real)
                    if linked
                    else os.open(folder.real.rpartition("/")[2], _DIR_FLAGS, dir_fd=dir_fd)
                )
            except OSError as exc:
                skipped.append(Skipped(folder.rel, f"unreadable: {_reason(exc)}"))
                continue
            try:
                yield from self._walk_dir(
                    root_real, root_fd, fd, folder, (*ancestors, folder.real), skipped
                )
            finally:
                os.close(fd)

    def _entry(
        self, root_real: str, dir_fd: int, child: _Node, ancestors: tuple[str, ...]
    ) -> tuple[_Node, os.stat_result | None, bool] | Skipped:
        """(node, its stat, linked) for a file; (node, None, linked) for a folder to walk."""
        name = child.real.rpartition("/")[2]
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # the entry itself
            linked = stat.S_ISLNK(st.st_mode)
            if linked:
                followed, why = self._follow(root_real, child)
                if followed is None:
                    return Skipped(child.rel, why)
                child = followed
                st = os.stat(os.path.join(root_real, child.real), follow_symlinks=False)
        except OSError as exc:
            return Skipped(child.rel, f"unreadable: {_reason(exc)}")
        if stat.S_ISREG(st.st_mode):
            return child, st, linked
        if not stat.S_ISDIR(st.st_mode):
            return Skipped(child.rel, "not a regular file")
        if _loops(child.real, ancestors):
            return Skipped(child.rel, "symbolic link, not followed: a loop")
        return child, None, linked

    def _locate(self, root_real: str, rel: str) -> _Node:
        """The file a listed path names now, by the walk's rules; DocumentGone when none."""
        node = _ROOT
        parts = rel.split("/")
        for i, name in enumerate(parts):
            if not name or name in (".", "..") or name.startswith("."):
                raise DocumentGone(f"{rel!r}: not a listed path")
            node = node.child(name)
            try:
                st = os.stat(os.path.join(root_real, node.real), follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    followed, why = self._follow(root_real, node)
                    if followed is None:
                        raise DocumentGone(f"{rel!r}: {why}")
                    node = followed
                    st = os.stat(os.path.join(root_real, node.real), follow_symlinks=False)
            except FileNotFoundError as exc:
                raise DocumentGone(f"{rel!r}: no such file under {self.root}") from exc
            last = i == len(parts) - 1
            if not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
                raise DocumentGone(f"{rel!r}: no such file under {self.root}")
        return node

    # -- listing ----------------------------------------------------------------------

    def _wanted(self, node: _Node) -> bool:
        return self.scope.selects(node.paths)

    def fingerprint(self) -> str:
        """A cheap digest of the included files' paths, sizes and modification times.

        It changes whenever a file is added, removed, renamed or rewritten (or a
        followed link retargeted), without reading any file body: what the change
        sensor polls.
        """
        root_real, root_fd = self._open_root()
        digest = hashlib.sha256()
        try:
            for node, st in self._walk(root_real, root_fd, []):
                if self._wanted(node):
                    # The target only for a followed link: plain files keep their old line.
                    target = f"\0{node.real}" if node.real != node.rel else ""
                    line = f"{node.rel}\0{st.st_size}\0{st.st_mtime_ns}{target}\n"
                    digest.update(line.encode("utf-8", "surrogateescape"))
        finally:
            os.close(root_fd)
        return digest.hexdigest()[:32]

    def _document(
        self,
        root_real: str,
        node: _Node,
        st: os.stat_result,
        version: str,
        content: bytes | None = None,
    ) -> SourceDocument:
        """The document; with ``content`` (a fetch) its size is what was read."""
        listed = PurePosixPath(node.rel)
        real = Path(root_real, node.real)
        return SourceDocument(
            doc_id=document_id(self.source, node.rel),
            source=self.source,
            path=node.rel,
            uri=real.as_uri(),
            title=listed.stem,
            version=version,
            size=st.st_size if content is None else len(content),
            modified_at=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            # What the bytes are: a followed link's target decides the parser.
            doc_type=real.suffix.lower().lstrip("."),
            acl=Acl.empty(),
            local_path=real if content is None else None,
            content=content,
            rule_paths=node.paths,
            # The parse stage reads local_path only while it is still this file.
            identity=FileIdentity.of(st),
        )

    def scan(self, known: Mapping[str, FileStat] | None = None) -> ScanResult:
        """Every included document under the root, with its version stamp.

        Raises :class:`ConnectorError` when the root itself is missing or unreadable;
        a file that cannot be read becomes a :class:`DocumentFailure`, and a path
        not indexed for another reason (a link not followed) a :class:`Skipped`.
        """
        known = known or {}
        documents: list[SourceDocument] = []
        failures: list[DocumentFailure] = []
        stats: dict[str, FileStat] = {}
        skipped: list[Skipped] = []
        root_real, root_fd = self._open_root()
        try:
            for node, st in self._walk(root_real, root_fd, skipped):
                if not self._wanted(node):
                    continue
                previous = known.get(node.rel)
                seen = (st.st_size, st.st_mtime_ns)
                try:
                    if previous and (previous.size, previous.mtime_ns) == seen:
                        version = previous.version
                    else:
                        st, version = self._hash(root_fd, node.real)
                except OSError as exc:
                    reason = f"unreadable: {_reason(exc)}"
                    doc_id = document_id(self.source, node.rel)
                    failures.append(DocumentFailure(doc_id, node.rel, reason))
                    continue
                stats[node.rel] = FileStat(st.st_size, st.st_mtime_ns, version)
                documents.append(self._document(root_real, node, st, version))
                self._listed[node.rel] = node.paths
        finally:
            os.close(root_fd)
        self._report(skipped)
        return ScanResult(documents=documents, failures=failures, stats=stats, skipped=skipped)

    @staticmethod
    def _hash(root_fd: int, real: str) -> tuple[os.stat_result, str]:
        """The stat and hash of what was read: the descriptor's, not the path's."""
        fd, st = open_real_file(root_fd, real)
        try:
            return st, _hash_fd(fd)
        finally:
            os.close(fd)

    def _report(self, skipped: list[Skipped]) -> None:
        if not skipped:
            return
        for item in skipped:
            log.debug("source %s: skipped %s: %s", self.source, item.path, item.reason)
        shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:_SKIPPED_IN_WARNING])
        more = len(skipped) - _SKIPPED_IN_WARNING
        log.warning(
            "source %s: %d path(s) not indexed: %s%s",
            self.source,
            len(skipped),
            shown,
            f"; and {more} more" if more > 0 else "",
        )

    # -- the connector contract (connectors.base) -----------------------------------

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        scan = self.scan(known=self._known(cursor))
        stats = {p: [s.size, s.mtime_ns, s.version] for p, s in scan.stats.items()}
        yield ChangeBatch(
            documents=scan.documents,
            failures=scan.failures,
            cursor=dump_cursor({"files": stats}, version=CURSOR_VERSION),
            complete=True,
        )

    def _known(self, cursor: str | None) -> dict[str, FileStat]:
        """The previous scan's table; empty (every file hashed again) when unreadable."""
        if not cursor:
            return {}
        try:
            files = load_cursor(cursor, version=CURSOR_VERSION)["files"]
            return {path: FileStat(*values) for path, values in files.items()}
        except (UnreadableCursor, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.info(
                "source %s: previous cursor not used (%s); hashing every file", self.source, exc
            )
            return {}

    def list_ids(self) -> Iterator[DocumentStamp]:
        # Never used by the pipeline for a full listing like this one; a stamp has
        # one path, so a followed link's other paths are not in it.
        for doc in self.scan().documents:
            yield DocumentStamp(doc.doc_id, doc.version, doc.acl, doc.path)

    def fetch(self, doc_id: str) -> SourceDocument:
        """One listed document with its bytes, read through a descriptor opened without links.

        :raises DocumentGone: not a document of this source by the listing's rules now.
        :raises ConnectorError: unreadable, over ``limits.max_bytes``, or a followed
            link whose paths changed since this connector listed it.
        """
        prefix = f"{self.source}:"
        if not doc_id.startswith(prefix) or len(doc_id) == len(prefix):
            raise DocumentGone(f"{doc_id!r} is not a document of source {self.source!r}")
        rel = doc_id[len(prefix) :]
        root_real, root_fd = self._open_root()
        try:
            node = self._locate(root_real, rel)
            if not self._wanted(node):
                raise DocumentGone(f"{doc_id!r} is not a document of source {self.source!r}")
            listed = self._listed.get(rel)
            if listed is not None and listed != node.paths:
                raise ConnectorError(f"{doc_id!r}: its link changed since it was listed")
            fd, st = open_real_file(root_fd, node.real)
            try:
                content = self._read_within_limit(doc_id, fd, st)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ConnectorError(f"{doc_id!r}: unreadable: {_reason(exc)}") from exc
        finally:
            os.close(root_fd)
        version = "sha256:" + hashlib.sha256(content).hexdigest()
        return self._document(root_real, node, st, version, content=content)

    def _read_within_limit(self, doc_id: str, fd: int, st: os.stat_result) -> bytes:
        limit = self.scope.max_bytes
        content = None if st.st_size > limit else _read_fd(fd, limit)
        if content is None:
            raise ConnectorError(f"{doc_id}: over the source's limit of {limit} bytes")
        return content

    def close(self) -> None:
        pass
