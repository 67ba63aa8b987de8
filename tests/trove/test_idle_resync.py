"""An unchanged re-sync is recorded without Dagster; anything to do still runs the asset graph.

`trove ingest` without ``DAGSTER_HOME`` checks in-process first (pipelines/idle.py):
groups not due, the index at the generation the manifest recorded, and a dry scan
that finds nothing new, changed, deleted or to retry. Then it records the run as
the write stage would, without importing dagster; otherwise the real graph runs.
The first ingest and every graph run use the real path (Dagster in-process, the
parser, the embedded index) with a counting hash embedder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import trove.ingest
from core.acl import Principal
from retrieval.index.base import WriteBatch
from tests.trove.ingest_fakes import CountingEmbedder, use_embedder
from tests.trove.test_lost_index import DOCS, SOURCE, Workspace, write_config
from trove.ingest import run_ingest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture(autouse=True)
def _fast_embedder(monkeypatch, embedder):
    use_embedder(monkeypatch, embedder)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, embedder) -> Path:
    root = tmp_path_factory.mktemp("idle-baseline")
    for rel, text in DOCS.items():
        (root / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / rel).write_text(text)
    config = write_config(root)
    with pytest.MonkeyPatch.context() as mp:
        use_embedder(mp, embedder)
        mp.delenv("DAGSTER_HOME", raising=False)
        summary = run_ingest(config)["sources"][SOURCE]
    assert summary["added"] == len(DOCS) and summary["documents_failed"] == []
    return root


def _copy(baseline: Path, to: Path) -> Workspace:
    shutil.copytree(baseline, to)
    return Workspace(to, to / "trove.yaml")


@pytest.fixture
def ws(baseline, tmp_path) -> Workspace:
    return _copy(baseline, tmp_path / "ws")


@pytest.fixture
def graph_runs(monkeypatch) -> list[list[str]]:
    """The sources each call of the asset graph ran (the real graph runs)."""
    calls: list[list[str]] = []
    real = trove.ingest._run_graph

    def spy(settings, config_path, names, *args, **kwargs):
        calls.append(list(names))
        return real(settings, config_path, names, *args, **kwargs)

    monkeypatch.setattr(trove.ingest, "_run_graph", spy)
    return calls


def _state_db(ws: Workspace) -> sqlite3.Connection:
    return sqlite3.connect(ws.root / "state" / "sources" / SOURCE / "staging.sqlite")


def _persisted(ws: Workspace) -> dict:
    """What a run leaves in the staging store, timestamps aside."""
    db = _state_db(ws)
    try:
        counters = {n: json.loads(v) for n, v in db.execute("SELECT name, value FROM counters")}
        manifest = db.execute(
            "SELECT doc_id, path, version, acl_fingerprint, chunk_ids, state FROM manifest"
            " ORDER BY doc_id"
        ).fetchall()
        runs = [json.loads(s) for (s,) in db.execute("SELECT summary FROM runs ORDER BY run_id")]
        staged = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("pending", "parsed", "chunks")
        }
    finally:
        db.close()
    return {"counters": counters, "manifest": manifest, "runs": runs, "staged": staged}


def _last_seen(ws: Workspace) -> dict[str, str]:
    db = _state_db(ws)
    try:
        return dict(db.execute("SELECT doc_id, last_seen FROM manifest"))
    finally:
        db.close()


IDLE_PROBE = """
import json, sys
from trove.ingest import run_ingest
summary = run_ingest(sys.argv[1])
print(json.dumps({"summary": summary, "dagster": sorted(
    m for m in sys.modules if m.split(".")[0] == "dagster")[:5]}))
"""


def test_an_unchanged_resync_is_recorded_without_importing_dagster(ws):
    before = _persisted(ws)
    seen_before = _last_seen(ws)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    out = subprocess.run(
        [sys.executable, "-c", IDLE_PROBE, str(ws.config)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dagster"] == []
    summary = result["summary"]["sources"][SOURCE]
    assert summary["unchanged"] == len(DOCS)
    assert (summary["added"], summary["changed"], summary["deleted"]) == (0, 0, 0)
    assert summary["documents_parsed"] == summary["chunks_written"] == 0
    after = _persisted(ws)
    assert len(after["runs"]) == len(before["runs"]) + 1  # `trove status` sees this sync
    assert after["manifest"] == before["manifest"]
    assert all(_last_seen(ws)[d] >= seen_before[d] for d in seen_before)


def test_the_idle_path_leaves_what_the_dagster_path_leaves(baseline, tmp_path, graph_runs):
    """Same summary keys and values, same counters, manifest and staging tables."""
    via_graph = _copy(baseline, tmp_path / "graph")
    via_idle = _copy(baseline, tmp_path / "idle")
    # A touched file (new mtime, same bytes) moves the stat cursor: both commit it.
    for ws in (via_graph, via_idle):
        os.utime(ws.root / "docs" / "handbook/travel.md", ns=(1, 1_000_000_000))
    graph = run_ingest(via_graph.config, idle_check=False)["sources"][SOURCE]
    assert graph_runs == [[SOURCE]]
    idle = run_ingest(via_idle.config)["sources"][SOURCE]
    assert graph_runs == [[SOURCE]]  # the second took the idle path
    assert idle == graph
    assert list(idle) == list(graph)
    assert _persisted(via_idle) == _persisted(via_graph)
    # Either way the next run is idle again: the cursor was committed.
    run_ingest(via_graph.config)
    assert graph_runs == [[SOURCE]]


def test_a_changed_file_runs_the_graph(ws, graph_runs):
    (ws.root / "docs" / "handbook/laptops.md").write_text("# Laptops\n\nNow with a dock.\n")
    summary = ws.ingest()
    assert graph_runs == [[SOURCE]]
    assert summary["changed"] == 1 and summary["documents_parsed"] == 1
    assert ws.found("dock", Principal.of("sam", ["staff"])) == {"notes:handbook/laptops.md"}


def test_a_new_file_runs_the_graph(ws, graph_runs):
    (ws.root / "docs" / "handbook/bikes.md").write_text("# Bikes\n\nA tandem scheme.\n")
    assert ws.ingest()["added"] == 1 and graph_runs == [[SOURCE]]


def test_a_deleted_file_runs_the_graph(ws, graph_runs):
    (ws.root / "docs" / "handbook/holidays.md").unlink()
    summary = ws.ingest()
    assert graph_runs == [[SOURCE]] and summary["deleted"] == 1
    assert ws.found("solstice", Principal.of("sam", ["staff"])) == set()


def test_an_acl_rule_change_runs_the_graph(ws, graph_runs):
    write_config(ws.root, rules=[{"match": "hr/**", "allow_groups": ["payroll"]}])
    assert ws.ingest()["acl_only"] == 1 and graph_runs == [[SOURCE]]


def test_an_index_written_since_runs_the_graph_which_records_the_new_generation(ws, graph_runs):
    index = ws.index()
    try:
        recorded = index.index_generation()
        index.apply(WriteBatch(delete_docs={"elsewhere:gone.md"}))  # another source's commit
        assert index.index_generation() != recorded
    finally:
        index.close()
    summary = ws.ingest()
    assert graph_runs == [[SOURCE]]  # compared document by document: it agrees
    assert summary["unchanged"] == len(DOCS) and summary["index_repair"] is None
    ws.ingest()
    assert graph_runs == [[SOURCE]]  # the new generation was recorded: idle again


def test_a_missing_index_runs_the_graph(ws, graph_runs):
    shutil.rmtree(ws.root / "index")
    assert ws.ingest()["rebuilt"] == len(DOCS) and graph_runs == [[SOURCE]]


def test_groups_due_are_not_idle(ws, monkeypatch):
    # Only Confluence and SharePoint sources have groups, and remote sources never take
    # the idle path; the gate is checked first anyway, before any listing.
    due: list[str] = []
    monkeypatch.setattr(
        trove.ingest, "_groups_due", lambda settings, name: due.append(name) or True
    )
    assert trove.ingest._idle_summary(ws.settings(), SOURCE, sync_groups=True) is None
    assert due == [SOURCE]
    monkeypatch.setattr(trove.ingest, "_groups_due", lambda settings, name: False)
    assert trove.ingest._idle_summary(ws.settings(), SOURCE, sync_groups=True) is not None


def test_with_dagster_home_every_run_goes_to_the_run_history(ws, graph_runs, monkeypatch):
    home = ws.root / "dagster-home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert ws.ingest()["unchanged"] == len(DOCS)
    assert graph_runs == [[SOURCE]]
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 1


def test_the_idle_path_is_off_when_asked(ws, graph_runs):
    run_ingest(ws.config, idle_check=False)
    assert graph_runs == [[SOURCE]]


def test_the_dry_scan_writes_nothing_so_the_graph_after_it_sees_the_same_store(ws):
    from pipelines.idle import idle_scan

    (ws.root / "docs" / "handbook/laptops.md").write_text("# Laptops\n\nNow with a dock.\n")
    (ws.root / "docs" / "handbook/holidays.md").unlink()
    before = _persisted(ws)
    settings = ws.settings()
    for _ in range(2):
        store = ws.store()
        try:
            assert idle_scan(settings.source(SOURCE), store, settings.index) is None
        finally:
            store.close()
    assert _persisted(ws) == before
