"""Atomic commits: a writer killed mid-apply leaves the last commit; readers never see half
a batch. Writers run in a subprocess killed with SIGKILL (no cleanup code runs)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from tests.retrieval.builders import DIM, record

REPO = Path(__file__).resolve().parents[2]
STAFF = Acl(allow_groups=frozenset({"staff"}))
ALICE = Principal.of("alice", ["staff"])
DOCS = 8
CHUNKS = 3


def batch_for(version: int, rng: np.random.Generator) -> WriteBatch:
    """Every document rewritten; chunk ids carry the version so a search shows which batch."""
    recs = []
    for d in range(DOCS):
        for c in range(CHUNKS):
            r = record(f"doc{d}", c, f"alpha version{version} part{c}", STAFF, rng=rng)
            recs.append(dataclasses.replace(r, chunk_id=f"doc{d}@v{version}#{c}"))
    return WriteBatch(upserts=recs)


def versions_seen(ix: EmbeddedIndex) -> set[int]:
    """The batch versions one search sees, after checking every document is whole."""
    hits = ix.search_lexical("alpha", ALICE, 10 * DOCS * CHUNKS)
    by_doc: dict[str, set[str]] = defaultdict(set)
    for h in hits:
        doc, rest = h.chunk_id.split("@")
        by_doc[doc].add(rest)
    assert len(hits) == DOCS * CHUNKS, f"{len(hits)} hits: {sorted(h.chunk_id for h in hits)}"
    versions = set()
    for doc, parts in by_doc.items():
        assert len(parts) == CHUNKS, f"{doc} has {sorted(parts)}"
        versions |= {p.split("#")[0] for p in parts}
    return {int(v[1:]) for v in versions}


def assert_consistent(ix: EmbeddedIndex) -> int:
    """Whole documents, one batch version everywhere, reads agree with searches."""
    (version,) = versions_seen(ix)
    assert ix.doc_ids() == {f"doc{d}" for d in range(DOCS)}
    for d in range(DOCS):
        chunks = ix.document_chunks(f"doc{d}")
        assert [c.chunk_id for c in chunks] == [f"doc{d}@v{version}#{c}" for c in range(CHUNKS)]
    assert len(ix.all_acls()) == ix.stats().chunks == DOCS * CHUNKS
    assert len(ix.search_dense(np.ones(DIM), ALICE, 100)) == DOCS * CHUNKS
    return version


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from retrieval.index.embedded import EmbeddedIndex, index as index_module
    from tests.retrieval.test_crash_and_concurrency import batch_for

    path, version, stage = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if stage == "before_manifest":
        index_module.write_manifest = die
    elif stage == "before_current":
        index_module.write_current = die
    elif stage == "before_gc":
        index_module.EmbeddedIndex._collect_garbage = die
    ix = EmbeddedIndex.open(path)
    rng = np.random.default_rng(version)
    while True:  # stage "loop": keep committing until killed from outside
        ix.apply(batch_for(version, rng))
        print(version, flush=True)
        version += 1
        if stage != "loop":
            break
    """
)


def run_writer(path: Path, version: int, stage: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(version), stage],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def index_path(tmp_path) -> Path:
    path = tmp_path / "ix"
    with EmbeddedIndex.open(path, create=True, dimensions=DIM) as ix:
        ix.apply(batch_for(0, np.random.default_rng(0)))
        assert assert_consistent(ix) == 0
    return path


@pytest.mark.parametrize(
    ("stage", "committed"),
    [("before_manifest", False), ("before_current", False), ("before_gc", True)],
)
def test_writer_killed_at_each_stage_leaves_a_consistent_index(index_path, stage, committed):
    proc = run_writer(index_path, 1, stage)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with EmbeddedIndex.open(index_path) as ix:
        assert assert_consistent(ix) == (1 if committed else 0)
        # The next write works, and collects what the dead writer left behind.
        ix.apply(batch_for(2, np.random.default_rng(2)))
        assert assert_consistent(ix) == 2
        live = {e.id for e in ix._snap().manifest.segments}
        on_disk = {p.name for p in (index_path / "segments").iterdir()}
        previous = {p.name for p in index_path.glob("manifest-*.json")}
        assert live <= on_disk and len(previous) <= 2
    with EmbeddedIndex.open(index_path) as again:
        assert assert_consistent(again) == 2


def test_writer_killed_at_random_moments(index_path):
    rng = np.random.default_rng(1)
    version = 1
    commits = 0
    for _ in range(4):
        proc = run_writer(index_path, version, "loop")
        time.sleep(float(rng.uniform(0.6, 1.5)))  # imports take ~0.5 s, then commits
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        done = [int(v) for v in out.split()]
        commits += len(done)
        with EmbeddedIndex.open(index_path) as ix:
            seen = assert_consistent(ix)
        # The visible version is the last reported commit, or the one being committed.
        last = done[-1] if done else version - 1
        assert seen in {last, last + 1}
        version = max(seen, last) + 1
    assert commits > 0  # the writers got far enough to be killed between and inside commits


@pytest.mark.parametrize("shared_instance", [True, False], ids=["same-instance", "other-instance"])
def test_readers_never_see_half_a_batch(index_path, shared_instance):
    writer = EmbeddedIndex.open(index_path)
    reader = writer if shared_instance else EmbeddedIndex.open(index_path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            rng = np.random.default_rng(5)
            for version in range(1, 16):
                writer.apply(batch_for(version, rng))
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen: set[int] = set()
    searches = 0
    while not stop.is_set():
        if not shared_instance:
            reader.refresh()
        versions = versions_seen(reader)
        assert len(versions) == 1, f"one search saw several batches: {versions}"
        seen |= versions
        searches += 1
    thread.join()
    assert not errors, errors
    reader.refresh()
    assert assert_consistent(reader) == 15
    assert searches > 5 and len(seen) > 1  # the reader really ran alongside the writer
