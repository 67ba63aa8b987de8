"""The embedded index's readers (files.py): RowReader's rows equal the memory-mapped
rows, Blob reads the same items through pread or its map, and bad files or rows fail
with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index.base import IndexCorruptError
from retrieval.index.embedded.files import Blob, RowReader, load_npy, save_npy, write_blob


@pytest.fixture
def matrix(tmp_path):
    data = np.random.default_rng(5).normal(size=(1000, 384)).astype(np.float32)
    path = tmp_path / "vectors.npy"
    save_npy(path, data)
    return path, data


def test_rows_equal_the_mapped_rows_in_the_order_asked(matrix):
    path, data = matrix
    reader = RowReader(path)
    assert reader.shape == (1000, 384) and reader.dtype == np.float32
    rows = np.array([999, 0, 17, 17, 500])
    got = reader.rows(rows)
    np.testing.assert_array_equal(got, data[rows])
    np.testing.assert_array_equal(got, load_npy(path)[rows])
    assert reader.rows(np.array([], dtype=np.int64)).shape == (0, 384)


def test_a_row_out_of_range_is_refused(matrix):
    path, _ = matrix
    with pytest.raises(IndexError, match="row 1000 out of range"):
        RowReader(path).rows(np.array([3, 1000]))
    with pytest.raises(IndexError):
        RowReader(path).rows(np.array([-1]))


def test_a_cut_short_or_foreign_file_is_corrupt(matrix, tmp_path):
    path, _ = matrix
    short = tmp_path / "short.npy"
    short.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexCorruptError, match="header says"):
        RowReader(short)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array at all")
    with pytest.raises(IndexCorruptError, match="unreadable array file"):
        RowReader(garbage)
    flat = tmp_path / "flat.npy"
    save_npy(flat, np.zeros(10, dtype=np.float32))
    with pytest.raises(IndexCorruptError, match="matrix"):
        RowReader(flat)


def test_rows_not_in_the_page_cache_are_read_with_their_neighbours(matrix, monkeypatch):
    """RWF_NOWAIT fails for an uncached row (or reads only its cached first page): it is
    read with the window around it, and the remaining rows' windows are prefetched."""
    from retrieval.index.embedded import files

    path, data = matrix
    reader = RowReader(path)
    real = files.os.preadv
    advised = []

    def cold_rows(fd, buffers, offset, flags=0):
        row = (offset - reader._offset) // reader._row_bytes
        if flags and row == 3:
            raise BlockingIOError("not cached")
        if flags and row == 998:
            return 100  # the row's first page only
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(files.os, "preadv", cold_rows)
    monkeypatch.setattr(files.os, "posix_fadvise", lambda *args: advised.append(args))
    rows = np.array([2, 3, 998, 999])
    np.testing.assert_array_equal(reader.rows(rows), data[rows])
    # One prefetch pass, from the first miss on: rows 998 and 999 share a window.
    assert [a[1] for a in advised] == [reader._window_start(reader._offset + 998 * 1536)]
    assert all(a[2] == files.READ_AROUND for a in advised)
    advised.clear()
    np.testing.assert_array_equal(reader.rows(np.array([0, 2])), data[[0, 2]])
    assert advised == []  # every row was cached: nothing to prefetch


@pytest.fixture
def without_nowait(monkeypatch):
    """A file system that refuses RWF_NOWAIT (EOPNOTSUPP) but reads plainly."""
    import errno

    from retrieval.index.embedded import files

    real = files.os.preadv

    def no_nowait(fd, buffers, offset, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "not supported")
        return real(fd, buffers, offset)

    monkeypatch.setattr(files.os, "preadv", no_nowait)


def test_a_file_system_without_nowait_reads_plainly(matrix, without_nowait):
    path, data = matrix
    reader = RowReader(path)
    rows = np.array([5, 1, 700])
    np.testing.assert_array_equal(reader.rows(rows), data[rows])
    assert reader._flags == 0
    np.testing.assert_array_equal(reader.rows(rows), data[rows])


@pytest.mark.parametrize("mapped", [False, True])
def test_blob_items_read_the_same_through_pread_or_the_map(tmp_path, mapped):
    items = [b"doc-1#0", b"", "d\u00e9j\u00e0-vu#12".encode(), b"x" * 5000]
    write_blob(tmp_path / "ids.bin", tmp_path / "ids_off.npy", items)
    blob = Blob(tmp_path / "ids.bin", tmp_path / "ids_off.npy", mapped=mapped)
    assert len(blob) == 4
    assert [blob.get(i) for i in range(4)] == items
    assert blob.get_str(2) == "d\u00e9j\u00e0-vu#12"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_blob(empty / "ids.bin", empty / "ids_off.npy", [b"", b""])
    assert Blob(empty / "ids.bin", empty / "ids_off.npy", mapped=mapped).get(1) == b""
    assert blob.get_many([3, 0, 1, 0]) == [items[3], items[0], items[1], items[0]]
    assert blob.get_strs(np.array([2, 1, 2])) == [
        "d\u00e9j\u00e0-vu#12",
        "",
        "d\u00e9j\u00e0-vu#12",
    ]
    assert blob.get_strs(np.array([], dtype=np.int64)) == []
    assert blob.get_many([]) == []


def test_blob_items_not_in_the_page_cache_are_asked_for_together(tmp_path, monkeypatch):
    """get_many reads cached items without waiting, then prefetches every cold item in
    one pass before reading them, and returns all of them in the order asked."""
    from retrieval.index.embedded import files

    items = [f"record {i} ".encode() * (i + 1) for i in range(8)]
    write_blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy", items)
    blob = Blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy")
    cold_offsets = {int(blob.offsets[i]) for i in (1, 6)}
    real = files.os.preadv
    events = []

    def partly_cold(fd, buffers, offset, flags=0):
        if flags and offset in cold_offsets:
            events.append(("miss", offset))
            raise BlockingIOError("not cached")
        return real(fd, buffers, offset, flags)

    real_pread = files.os.pread
    monkeypatch.setattr(files.os, "preadv", partly_cold)
    monkeypatch.setattr(files.os, "posix_fadvise", lambda *a: events.append(("advise", a[1], a[2])))
    monkeypatch.setattr(
        files.os, "pread", lambda fd, n, off: events.append(("read", off)) or real_pread(fd, n, off)
    )
    wanted = [6, 0, 1, 7]
    assert blob.get_many(wanted) == [items[i] for i in wanted]
    o = blob.offsets

    def size(i):
        return int(o[i + 1] - o[i])

    assert events == [
        ("miss", int(o[6])),
        ("miss", int(o[1])),
        ("advise", int(o[6]), size(6)),
        ("advise", int(o[1]), size(1)),
        ("read", int(o[6])),
        ("read", int(o[1])),
    ]
    events.clear()
    assert blob.get_many([0, 7]) == [items[0], items[7]]
    assert events == []  # all cached: no advice, no waiting read


def test_blob_get_many_on_a_file_system_without_nowait(tmp_path, without_nowait):
    items = [b"alpha", b"beta", b"gamma"]
    write_blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy", items)
    blob = Blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy")
    assert blob.get_many([2, 0]) == [b"gamma", b"alpha"]
    assert blob._flags == 0
    assert blob.get_many([1]) == [b"beta"]


def test_blob_get_many_refuses_a_cut_short_file(tmp_path):
    write_blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy", [b"abc", b"defgh"])
    blob = Blob(tmp_path / "meta.bin", tmp_path / "meta_off.npy")
    with open(tmp_path / "meta.bin", "r+b") as f:
        f.truncate(5)  # the file shrinks after it was opened
    with pytest.raises(IndexCorruptError, match="item 1 is cut short"):
        blob.get_many([0, 1])


def test_a_blob_whose_offsets_disagree_with_its_file_is_corrupt(tmp_path):
    write_blob(tmp_path / "ids.bin", tmp_path / "ids_off.npy", [b"abc", b"de"])
    (tmp_path / "ids.bin").write_bytes(b"abcd")
    with pytest.raises(IndexCorruptError, match="offsets say 5"):
        Blob(tmp_path / "ids.bin", tmp_path / "ids_off.npy", mapped=True)
