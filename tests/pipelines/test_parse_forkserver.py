"""Parse workers forked from the preloaded forkserver: ready at once, same guarantees, and
still working (spawned) when the forkserver or its preload does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import LimitsConfig
from pipelines.errors import ParseError
from pipelines.parse_worker import (
    GuardedParser,
    ParseWorker,
    default_start_method,
    prestart_parse_workers,
)
from tests.pipelines import hostile_files as hostile
from tests.pipelines.worker_probe import PRELOADED_PARTITIONERS, document

PROBE = "tests.pipelines.worker_probe:probe_parse"
LIMITS = LimitsConfig()
REPO_ROOT = Path(__file__).resolve().parents[2]

needs_forkserver = pytest.mark.skipif(
    default_start_method() != "forkserver", reason="no forkserver on this platform"
)


def _state(worker: ParseWorker, path: Path) -> dict[str, Any]:
    return json.loads(worker.parse(document(path), LIMITS).text)


@needs_forkserver
def test_workers_are_forked_from_the_forkserver_with_the_preload_done(tmp_path):
    assert prestart_parse_workers() is True
    path = hostile.make_text(tmp_path, "probe.txt", "probe")
    with ParseWorker(PROBE) as worker:
        state = _state(worker, path)
        assert worker.start_method == "forkserver"
    assert state["ppid"] != os.getpid()  # forked by the forkserver, not by us
    # The worker never parsed a document, yet the partitioners are imported: the
    # forkserver's preload ran, completely, before it forked.
    assert state["preload_failed"] == {}
    assert state["partitioners"] == list(PRELOADED_PARTITIONERS)


@needs_forkserver
def test_crashes_and_timeouts_restart_a_fresh_forked_worker(tmp_path):
    probe = hostile.make_text(tmp_path, "probe.txt", "probe")
    crash = hostile.make_text(tmp_path, "crash.txt", "boom")
    slow = hostile.make_text(tmp_path, "slow.txt", "never parsed")
    with ParseWorker(PROBE) as worker:
        first = _state(worker, probe)
        with pytest.raises(ParseError, match="exit code 3") as info:
            worker.parse(document(crash), LIMITS)
        assert info.value.reason_class == "parser_crash"
        second = _state(worker, probe)
        started = time.perf_counter()
        with pytest.raises(ParseError, match=r"limits\.timeout_s") as info:
            worker.parse(document(slow), LimitsConfig(timeout_s=0.5))
        assert info.value.reason_class == "timeout"
        assert time.perf_counter() - started < 5.0
        with pytest.raises(ProcessLookupError):
            os.kill(second["pid"], 0)  # killed, and reaped by the forkserver
        third = _state(worker, probe)
        assert worker.starts == 3
        assert worker.start_method == "forkserver"
    assert len({first["pid"], second["pid"], third["pid"]}) == 3
    # Each replacement came from the same preloaded forkserver.
    assert first["ppid"] == second["ppid"] == third["ppid"] != os.getpid()
    assert third["preload_failed"] == {}


def test_spawn_is_still_available_and_spawned_workers_import_for_themselves(tmp_path):
    path = hostile.make_text(tmp_path, "probe.txt", "probe")
    with ParseWorker(PROBE, start_method="spawn") as worker:
        state = _state(worker, path)
        assert worker.start_method == "spawn"
    assert state["ppid"] == os.getpid()
    assert state["preload_failed"] is None
    with pytest.raises(ValueError, match="start_method"):
        ParseWorker(start_method="fork")


def test_warm_up_swallows_every_failure(monkeypatch):
    from pipelines import parse_preload

    def fail(exc: BaseException):
        def step() -> None:
            raise exc

        return step

    ran: list[str] = []
    steps = [
        ("error", fail(RuntimeError("broken"))),
        ("exit", fail(SystemExit(2))),
        ("interrupt", fail(KeyboardInterrupt())),
        ("fine", lambda: ran.append("fine")),
    ]
    monkeypatch.setattr(parse_preload, "steps", lambda: steps)
    failed = parse_preload.warm_up()
    assert failed == {
        "error": "RuntimeError: broken",
        "exit": "SystemExit: 2",
        "interrupt": "KeyboardInterrupt",
    }
    assert ran == ["fine"]  # a failed step does not stop the next


def test_the_real_warm_up_steps_complete(monkeypatch):
    from pipelines import parse_preload

    assert [name for name, _ in parse_preload.steps()] == [
        "offline_environment",
        "spacy",
        "worker_modules",
        "parse_md",
        "parse_html",
        "parse_txt",
    ]
    assert parse_preload.warm_up() == {}
    monkeypatch.setattr("pipelines.parse.parse_file", lambda *a, **k: 1 / 0)
    failed = parse_preload.warm_up()
    assert set(failed) == {"parse_md", "parse_html", "parse_txt"}
    assert failed["parse_md"] == "ZeroDivisionError: division by zero"


@pytest.mark.slow
def test_spawned_and_forked_workers_parse_identically(tmp_path):
    paths = [
        hostile.make_docx(tmp_path),
        hostile.make_pdf(tmp_path),
        hostile.make_utf16_text(tmp_path),
        hostile.make_text(tmp_path, "guide.md", "---\ntitle: Guide\n---\n# Start\n\nRead me.\n"),
        hostile.make_text(tmp_path, "page.html", "<title>P</title><h1>Hi</h1><p>A page.</p>"),
        hostile.make_truncated_pdf(tmp_path),
    ]

    def outcomes(parser: GuardedParser) -> list[Any]:
        results: list[Any] = []
        for path in paths:
            try:
                results.append(parser(document(path)))
            except ParseError as exc:
                results.append((exc.reason_class, str(exc)))
        return results

    with GuardedParser(LIMITS, ParseWorker(start_method="spawn")) as spawned:
        expected = outcomes(spawned)
    with GuardedParser(LIMITS, ParseWorker()) as forked:
        assert outcomes(forked) == expected
        assert forked.worker.start_method == default_start_method()
    assert expected[-1][0] == "malformed"


# ---------------------------------------------------------------- a fresh process each

_SCRIPT = """
import json, multiprocessing.forkserver, os, sys
from pathlib import Path

import pipelines.parse_worker as pw
from tests.pipelines.worker_probe import document
from pipelines.config import LimitsConfig

preload, start_timeout_s, mode, path = sys.argv[1:5]
if preload:
    pw.PRELOAD_MODULE = preload
if mode == "foreign":
    multiprocessing.forkserver.ensure_running()  # someone else's, without our preload
elif mode == "prestart":
    pw.prestart_parse_workers()
target = "tests.pipelines.worker_probe:probe_parse"
with pw.ParseWorker(target, start_timeout_s=float(start_timeout_s)) as worker:
    text = worker.parse(document(Path(path)), LimitsConfig()).text
    result = {"method": worker.start_method, "parent": os.getpid(), "state": json.loads(text)}
print(json.dumps(result))
"""


def _in_fresh_process(
    tmp_path: Path, *, preload: str = "", mode: str = "", start_timeout_s: float = 60.0
) -> dict[str, Any]:
    path = hostile.make_text(tmp_path, "probe.txt", "probe")
    env = dict(os.environ)
    # tmp_path first: the broken modules a test writes there shadow real ones, in
    # the forkserver too (it inherits the environment, and its imports see this path).
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, preload, str(start_timeout_s), mode, str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_forkserver
def test_a_failing_preload_step_leaves_the_forkserver_serving(tmp_path):
    # An unstructured that cannot be imported: every warm-up parse fails. The probe
    # needs no unstructured, so its worker must still start and answer.
    broken = tmp_path / "unstructured"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('unstructured is broken')\n")
    result = _in_fresh_process(tmp_path, mode="prestart")
    assert result["method"] == "forkserver"
    assert result["state"]["ppid"] != result["parent"]
    failed = result["state"]["preload_failed"]
    assert set(failed) == {"parse_md", "parse_html", "parse_txt"}
    assert "unstructured is broken" in failed["parse_md"]


@pytest.mark.slow
@needs_forkserver
def test_a_forkserver_started_without_our_preload_still_serves(tmp_path):
    result = _in_fresh_process(tmp_path, mode="foreign")
    assert result["method"] == "forkserver"
    assert result["state"]["ppid"] != result["parent"]
    assert result["state"]["preload_failed"] is None  # the worker imported for itself


@pytest.mark.slow
@needs_forkserver
def test_a_preload_that_kills_the_forkserver_falls_back_to_spawn(tmp_path):
    (tmp_path / "deadly_preload.py").write_text("raise RuntimeError('kills the forkserver')\n")
    result = _in_fresh_process(tmp_path, preload="deadly_preload")
    assert result["method"] == "spawn"
    assert result["state"]["ppid"] == result["parent"]


@pytest.mark.slow
@needs_forkserver
def test_a_hanging_preload_is_killed_after_the_start_timeout(tmp_path):
    (tmp_path / "hanging_preload.py").write_text("import time\ntime.sleep(600)\n")
    started = time.perf_counter()
    result = _in_fresh_process(tmp_path, preload="hanging_preload", start_timeout_s=3.0)
    assert result["method"] == "spawn"
    assert result["state"]["ppid"] == result["parent"]
    assert time.perf_counter() - started < 90
