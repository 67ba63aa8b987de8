"""Durable file writes and mmap reads: the only place the embedded index touches the disk."""

from __future__ import annotations

import errno
import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.index.base import IndexCorruptError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync; the caller fsyncs the directory once all its files are written."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_bytes(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def load_npy(path: Path) -> np.ndarray:
    """Memory-mapped when possible (empty arrays cannot be mapped).

    Returned as a plain ``ndarray`` view of the map: ``np.memmap``'s Python-level
    ``__getitem__`` was a large share of a query's record reads
    (docs/benchmarks.md#why-the-query-path-is-built-this-way).
    """
    try:
        return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    except ValueError:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"unreadable array file {path}: {exc}") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IndexCorruptError(f"unreadable array file {path}: {exc}") from exc


def release_pages(array: np.ndarray) -> None:
    """Unmap this process's pages of a memory-mapped array; they stay in the OS page cache.

    Rows read at random (the float32 vectors rescored by a dense search) would
    otherwise stay mapped, and with the kernel's fault-around each read maps
    ~64 KiB: after a few hundred queries the whole file counts as resident
    memory. Afterwards a read costs a minor page fault. Safe while other
    threads read the array: the file is read-only, so a dropped page is
    faulted in again with the same bytes.
    """
    base: Any = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    mapped = getattr(base, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"unreadable JSON file {path}: {exc}") from exc


def write_blob(data_path: Path, offsets_path: Path, items: Sequence[bytes]) -> None:
    """A column of byte strings: one concatenated file plus an (n + 1) int64 offsets array."""
    lengths = np.fromiter((len(b) for b in items), dtype=np.int64, count=len(items))
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    write_bytes(data_path, b"".join(items))
    save_npy(offsets_path, offsets)


class _PreadFile:
    """A file kept open for the segment's lifetime (it survives the file's later removal)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self._flags = _NOWAIT

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise IndexCorruptError(f"{self._path}: read after close")
        return self._fd

    def _read_cached(self, fd: int, target: memoryview | bytearray, offset: int) -> int:
        """Fill ``target`` from ``offset`` if the page cache holds it all; -1 if it does not.

        Never waits for the disk (``RWF_NOWAIT``). On a file system without that
        flag it reads plainly, from then on, and returns what it read.
        """
        try:
            return os.preadv(fd, [target], offset, self._flags)
        except BlockingIOError:  # not in the page cache
            return -1
        except OSError as exc:
            if not self._flags or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._flags = 0  # a file system without RWF_NOWAIT: plain reads from now on
            return os.preadv(fd, [target], offset)

    @staticmethod
    def _advise_will_need(fd: int, spans: Sequence[tuple[int, int]]) -> None:
        """Ask the kernel to start reading ``(offset, length)`` spans now, all at once."""
        advise = getattr(os, "posix_fadvise", None)
        if advise is None:
            return
        for offset, length in spans:
            advise(fd, offset, length, os.POSIX_FADV_WILLNEED)


class Blob(_PreadFile):
    """Read side of :func:`write_blob`: random access to item ``i`` without loading the file.

    Items are read with ``os.pread``, not through a memory map: on current Linux
    kernels a fault in a mapped file maps a whole page-cache folio, far more
    than the record read (measured: docs/benchmarks.md#why-the-query-path-is-built-this-way),
    so a server reading a few records per query would soon hold the whole file.

    ``mapped=True`` reads through a memory map instead, for a column small
    enough to be resident whole (chunk ids) and read often (50 ids per retriever
    per query): a slice of the map costs a fraction of a ``pread``, whose calls
    were a large share of a lexical search
    (docs/benchmarks.md#why-the-query-path-is-built-this-way).
    """

    def __init__(self, data_path: Path, offsets_path: Path, *, mapped: bool = False):
        self.offsets = load_npy(offsets_path)
        size = int(self.offsets[-1]) if len(self.offsets) else 0
        if data_path.stat().st_size != size:
            raise IndexCorruptError(
                f"{data_path}: {data_path.stat().st_size} bytes, offsets say {size}"
            )
        super().__init__(data_path)
        self._map: mmap.mmap | None = None
        if mapped and size:  # an empty file cannot be mapped; nothing to read anyway
            self._map = mmap.mmap(self._open_fd(), size, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> bytes:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        if self._map is not None:
            return self._map[start:end]  # the size was checked against the offsets
        data = os.pread(self._open_fd(), end - start, start)
        if len(data) != end - start:
            raise IndexCorruptError(f"{self._path}: item {i} is cut short")
        return data

    def get_many(self, indices: Sequence[int]) -> list[bytes]:
        """Items ``indices``, in that order; those not in the page cache come from disk together.

        A query's records are a handful of random items: read one after another
        from a cold file, each waits for the disk in turn. Here the cached ones are
        read first without waiting, the kernel is asked for all the others at once,
        and only then are they read.
        """
        if self._map is not None or not self._flags:
            return [self.get(i) for i in indices]
        fd = self._open_fd()
        out: list[bytes] = []
        cold: list[tuple[int, int, int]] = []  # (position, offset, length)
        for pos, i in enumerate(indices):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            buffer = bytearray(end - start)
            if end > start and self._read_cached(fd, buffer, start) != end - start:
                cold.append((pos, start, end - start))
            out.append(bytes(buffer))
        if cold:
            self._advise_will_need(fd, [(start, length) for _, start, length in cold])
            for pos, _, _ in cold:
                out[pos] = self.get(indices[pos])
        return out

    def get_str(self, i: int) -> str:
        return self.get(i).decode()

    def get_strs(self, indices: np.ndarray) -> list[str]:
        """Items ``indices`` decoded, in that order; one offsets lookup for all of them."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._map is None:
            return [item.decode() for item in self.get_many(indices.tolist())]
        # Slicing the map per item is cheap; two numpy scalar reads per item cost more.
        mapped = self._map
        starts = self.offsets[indices].tolist()
        ends = self.offsets[indices + 1].tolist()
        return [mapped[a:b].decode() for a, b in zip(starts, ends, strict=True)]


class RowReader(_PreadFile):
    """Rows of a 2-d ``.npy`` file read with ``os.pread``, not through its memory map.

    For the few rows a dense search rescores in float32 (64 of 100k, ~800 of 1M):
    a fault in the map costs more than the read, and each one leaves pages mapped
    that must be released again (:func:`release_pages`); dense search got faster
    at 100k and 1M rows (measured: docs/benchmarks.md#why-the-query-path-is-built-this-way).

    A row already in the page cache is read alone (``RWF_NOWAIT``, Linux). One that
    is not is read with the 128 KiB around it, as a fault in the map would read
    ahead: a single-page ``pread`` per cold row would warm a cold 1M index one
    page at a time, slower than through the map. Like :class:`Blob`, it keeps its
    descriptor open for the segment's lifetime.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(f)
            except ValueError as exc:
                raise IndexCorruptError(f"unreadable array file {path}: {exc}") from exc
            self._offset = f.tell()
        if len(shape) != 2 or fortran_order:
            raise IndexCorruptError(f"{path}: expected a C-ordered matrix, got shape {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        expected = self._offset + self.shape[0] * self._row_bytes
        if path.stat().st_size != expected:
            raise IndexCorruptError(f"{path}: {path.stat().st_size} bytes, header says {expected}")
        super().__init__(path)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (in that order), as a fresh ``(len(indices), d)`` array."""
        out = np.empty((len(indices), self.shape[1]), dtype=self.dtype)
        fd = self._open_fd()
        view = out.reshape(-1).view(np.uint8).data  # a writable memoryview of `out`
        size = self._row_bytes
        wanted = np.asarray(indices, dtype=np.int64).tolist()
        prefetched = False
        for i, row in enumerate(wanted):
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {row} out of range for {self.shape[0]} rows")
            target = view[i * size : (i + 1) * size]
            offset = self._offset + row * size
            got = self._read_cached(fd, target, offset)
            if got != size and self._flags:
                # Not cached, or a row across two pages of which only the first is.
                if not prefetched:
                    # A cold file: ask for every remaining row's window at once, so
                    # the disk serves them in parallel instead of one read at a time.
                    self._prefetch(fd, wanted[i + 1 :])
                    prefetched = True
                got = self._read_around(fd, target, offset)
            if got != size:
                raise IndexCorruptError(f"{self._path}: row {row} is cut short")
        return out

    def _prefetch(self, fd: int, rows: list[int]) -> None:
        starts = (self._window_start(self._offset + row * self._row_bytes) for row in rows)
        self._advise_will_need(fd, [(start, READ_AROUND) for start in dict.fromkeys(starts)])

    @staticmethod
    def _window_start(offset: int) -> int:
        return max(0, offset - READ_AROUND // 2) // _PAGE * _PAGE

    def _read_around(self, fd: int, target: memoryview, offset: int) -> int:
        """Read ``target`` at ``offset`` with the window around it, so that the cache
        holds the neighbours too; returns the bytes of ``target`` read."""
        start = self._window_start(offset)
        window = os.pread(fd, READ_AROUND, start)
        got = window[offset - start : offset - start + len(target)]
        target[: len(got)] = got
        return len(got)


# Linux's "fail instead of reading from disk" flag for preadv (absent elsewhere: plain reads).
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_PAGE = 4096
# Bytes read around a row that is not in the page cache (the kernel's default read-ahead).
READ_AROUND = 128 * 1024
