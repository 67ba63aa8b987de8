"""Page-cache hints on memory-mapped index arrays change no value read through them."""

from __future__ import annotations

import numpy as np

from retrieval.index.embedded.files import advise_random, load_npy, release_pages, save_npy


def test_hints_on_mapped_and_in_memory_arrays_keep_every_value(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2_000, 8)).astype(np.float32)
    save_npy(tmp_path / "v.npy", data)
    mapped = load_npy(tmp_path / "v.npy")
    advise_random(mapped)
    rows = rng.choice(len(data), size=50, replace=False)
    np.testing.assert_array_equal(mapped[rows], data[rows])
    release_pages(mapped)  # dropped pages are read again from the file
    np.testing.assert_array_equal(mapped[rows], data[rows])
    # Arrays that are not memory-mapped (empty files, built in memory) are left alone.
    advise_random(data)
    release_pages(data[10:20])
    np.testing.assert_array_equal(data, load_npy(tmp_path / "v.npy"))
