"""SIGKILL `trove ingest` at several points: the previous index keeps serving, consistent,
and the next run completes the work with no duplicates and nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from core.acl import Principal
from pipelines.store import StagingStore
from retrieval.index.factory import open_index
from trove import demo
from trove.config import load_settings
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

EVERYONE = Principal.of(
    "auditor", ["all-staff", "hr", "finance", "security", "engineering", "leadership"]
)
NEW_DOC = "handbook/bike-to-work.md"
EDITED = "handbook/expenses.md"
DELETED = "handbook/holiday-calendar-2025.xlsx"


def index_state(settings) -> dict[str, list[str]]:
    """doc_id -> its chunk ids, read from a fresh reader; asserts internal consistency."""
    index = open_index(settings.index)
    try:
        acls = index.all_acls()
        ids = list(acls)
        assert len(ids) == len(set(ids)), "duplicate chunk ids"
        state = {}
        for doc_id in index.doc_ids():
            chunks = index.document_chunks(doc_id)
            ords = [c.ord for c in chunks]
            assert ords == list(range(len(chunks))), f"{doc_id}: half a document {ords}"
            state[doc_id] = [c.chunk_id for c in chunks]
        assert sum(len(v) for v in state.values()) == len(ids)
        # and it still answers
        assert index.search_lexical("expenses receipts", EVERYONE, k=5)
        return state
    finally:
        index.close()


def manifest_state(settings) -> dict[str, list[str]]:
    store = StagingStore.for_source(settings.state.path, "demo")
    try:
        return {d: list(e.chunk_ids) for d, e in store.manifest().items() if e.state == "indexed"}
    finally:
        store.close()


def ingest_killed_at(config, step: str, delay_s: float) -> tuple[bool, bool]:
    """Run `trove ingest -v`, SIGKILL it `delay_s` after `step` starts.

    Returns (killed, index_step_started): whether the kill happened before the run
    finished, and whether the index write step had started by then (read from
    everything the process wrote before it died).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trove", "ingest", "--config", str(config), "--verbose"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    killed = False
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "STEP_START" in line and f'"{step}"' in line:
                time.sleep(delay_s)
                killed = proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                seen.extend(proc.stderr.read().splitlines())
                break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    index_started = any("STEP_START" in ln and '"search_index"' in ln for ln in seen)
    return killed, index_started


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("crash")
    config = demo.prepare(workdir)
    run_ingest(config)
    settings = load_settings(config)
    baseline = index_state(settings)
    corpus = workdir / "corpus"
    (corpus / NEW_DOC).write_text(
        "# Bike to work\n\nThe cycle-to-work scheme reimburses 40 percent of a new bicycle.\n"
    )
    text = (corpus / EDITED).read_text()
    (corpus / EDITED).write_text(
        text + "\n\n## Late claims\n\nClaims older than 90 days "
        "need a director's approval in the Ledgerline tool.\n"
    )
    (corpus / DELETED).unlink()
    return config, settings, baseline


@pytest.mark.parametrize(
    ("step", "delay_s"),
    [
        ("source_documents", 0.0),
        ("parsed_documents", 0.2),
        ("chunk_embeddings", 0.0),
        ("search_index", 0.0),
        ("search_index", 0.15),
    ],
)
def test_kill_leaves_a_consistent_serving_index(workspace, step, delay_s):
    config, settings, baseline = workspace
    killed, index_started = ingest_killed_at(config, step, delay_s)
    state = index_state(settings)
    if killed and not index_started:
        # Nothing is written to the index before its own step: the old one serves as is.
        assert state == baseline
    # Whatever happened, every document in the index is whole and the index serves;
    # the document set is either the old or the new one for each document.
    for doc_id, chunk_ids in state.items():
        assert chunk_ids, doc_id


def test_next_run_completes_the_work_without_duplicates(workspace):
    config, settings, baseline = workspace
    summary = run_ingest(config)["sources"]["demo"]
    assert summary["documents_failed"] == []
    state = index_state(settings)
    assert f"demo:{NEW_DOC}" in state
    assert f"demo:{DELETED}" not in state
    assert set(state) == set(baseline) - {f"demo:{DELETED}"} | {f"demo:{NEW_DOC}"}
    assert state == manifest_state(settings)
    index = open_index(settings.index)
    try:
        text = " ".join(c.text for c in index.document_chunks(f"demo:{EDITED}"))
        assert "Ledgerline" in text
        counts = Counter(c.text for c in index.document_chunks(f"demo:{EDITED}"))
        assert max(counts.values()) == 1
    finally:
        index.close()
    again = run_ingest(config)["sources"]["demo"]
    assert again["chunks_embedded"] == 0 and again["unchanged"] == len(state)
