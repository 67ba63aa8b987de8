"""files.RowReader: rows read with pread equal the memory-mapped rows, and bad files or
rows fail with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index.base import IndexCorruptError
from retrieval.index.embedded.files import RowReader, load_npy, save_npy


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
