"""How much cheaper an unchanged re-sync is than the first ingest (issue: >= 50x).

Ingests a corpus (by default ../shared/corpora/18f-handbook) into a fresh
temporary index, then syncs it again unchanged: once in-process and as new
processes (imports and all), as a scheduler would run it. Wall and CPU-seconds
for each; a new process's CPU includes any process it starts.

The new-process re-sync runs ``repeats`` times, alternating with its peer, the
same re-sync through the Dagster run (``run_ingest(idle_check=False)`` after
importing the CLI: what every re-sync cost before the idle path,
:mod:`pipelines.idle`); medians of both, and their ratio.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from trove.bench.errors import BenchError
from trove.ingest import run_ingest

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared/corpora/18f-handbook"


def _children_cpu_s() -> float:
    """CPU-seconds of the waited-for child processes so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _config(corpus: Path, workdir: Path) -> Path:
    config = workdir / "trove.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "index": {"path": str(workdir / "index")},
                "state": {"path": str(workdir / "state")},
                "sources": [
                    {
                        "name": "corpus",
                        "path": str(corpus),
                        "acl": {"default": {"allow_groups": ["all-staff"]}},
                    }
                ],
            }
        )
    )
    return config


# The peer: the same fresh process, forced through the Dagster run.
_GRAPH_RESYNC = (
    "import sys, trove.cli; from trove.ingest import run_ingest; "
    "run_ingest(sys.argv[1], idle_check=False)"
)


def _timed_process(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU-seconds (its own and its children's) of one new process."""
    children = _children_cpu_s()
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started, _children_cpu_s() - children


def run(
    corpus: Path | None = None, workdir: Path | None = None, repeats: int = 5
) -> dict[str, Any]:
    corpus = Path(corpus or DEFAULT_CORPUS)
    if not corpus.is_dir():
        raise BenchError(f"corpus not found: {corpus} (pass --corpus)")
    with tempfile.TemporaryDirectory(prefix="trove-resync-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = _config(corpus, work)
        started = time.perf_counter()
        first = run_ingest(config)["sources"]["corpus"]
        first_s = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        again = run_ingest(config)["sources"]["corpus"]
        resync_s = time.perf_counter() - started
        resync_cpu_s = time.process_time() - cpu
        idle: list[tuple[float, float]] = []
        graph: list[tuple[float, float]] = []
        for _ in range(repeats):  # alternating: the machine's load hits both alike
            idle.append(
                _timed_process(
                    [sys.executable, "-m", "trove", "ingest", "--config", str(config), "--json"]
                )
            )
            graph.append(_timed_process([sys.executable, "-c", _GRAPH_RESYNC, str(config)]))
    if again["chunks_embedded"] or again["documents_parsed"]:
        raise BenchError(f"the re-sync was not a no-op: {again}")
    return {
        "corpus": str(corpus),
        "documents": first["documents_seen"],
        "chunks": first["chunks_written"],
        "first_ingest_s": round(first_s, 3),
        "resync_s": round(resync_s, 3),
        "speedup": round(first_s / resync_s, 1),
        "resync_cpu_s": round(resync_cpu_s, 3),
        "repeats": repeats,
        "resync_new_process_s": _median(idle, 0),
        "resync_new_process_cpu_s": _median(idle, 1),
        "speedup_new_process": round(first_s / _median(idle, 0), 1),
        "resync_dagster_run_new_process_s": _median(graph, 0),
        "resync_dagster_run_new_process_cpu_s": _median(graph, 1),
        "idle_path_vs_dagster_run_wall": round(_median(graph, 0) / _median(idle, 0), 2),
        "idle_path_vs_dagster_run_cpu": round(_median(graph, 1) / _median(idle, 1), 2),
    }


def _median(samples: list[tuple[float, float]], field: int) -> float:
    return round(statistics.median(s[field] for s in samples), 3)
