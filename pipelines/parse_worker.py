"""Parsing in a separate, killable process with a wall-clock timeout.

A parser that hangs, segfaults or is killed for memory must cost one document,
never the run. :class:`ParseWorker` keeps one long-lived child process that
imports unstructured once and parses the documents sent to it, one at a time.
Children are forked from a ``multiprocessing`` forkserver (never from the caller:
no copy of its threads or locks) whose preload, :mod:`pipelines.parse_preload`,
has already imported spaCy and unstructured and warmed up the Markdown, HTML and
plain-text partitioners, so a child starts in milliseconds instead of seconds and
shares those pages with its siblings. Where there is no forkserver (Windows), or
it fails, children are spawned and import everything themselves. For each
document the caller waits at most ``limits.timeout_s``; past that the child is
killed with SIGKILL and the document fails with reason class ``timeout``. A child
that dies on its own (segfault, OOM killer, ``os._exit``) fails the document with
``parser_crash``. Either way the next document gets a fresh child.

The child also applies :func:`pipelines.guard.check_parsed` (pages, characters,
elements) so an oversized result is refused before it is sent back, and passes
``max_chars``/``max_line_chars`` to :func:`pipelines.parse.parse_file` so huge
plain-text files are refused, and very long lines wrapped, before partitioning.

:func:`make_parse_fn` is what ingestion uses: guard checks in the calling process,
then a pool of workers, one per core (:func:`default_workers`). Parsing is pure
Python, so threads would not help; separate processes do. The pool is thread-safe:
:func:`pipelines.stages.parse_pending` calls it from as many threads as it has
workers (its ``concurrency``), each call taking an idle worker for one document,
so a document that hangs holds one worker until its timeout while the others go
on. Timeouts, crashes and restarts are per worker, exactly as with one.

Usage::

    from pipelines.parse_worker import make_parse_fn

    with make_parse_fn(source_config.limits) as parse:
        result = parse_pending(store, parse)

A worker's first document of a type the preload did not warm up (PDF, DOCX...)
also pays for importing that unstructured partitioner (seconds), inside
``timeout_s``; keep the timeout well above that. Workers start on first use, and
the most recently used idle worker is reused first, so a run with fewer documents
than cores starts no more workers than it can use at once. The forkserver starts
with the first worker, or earlier with :func:`prestart_parse_workers`, and lives
as long as the calling process.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from connectors.models import SourceDocument
from core.formats import IMAGE_TYPES
from pipelines.config import LimitsConfig
from pipelines.errors import ParseError, ParserCrashError, ParseTimeoutError
from pipelines.models import ParsedDocument
from pipelines.ocr import OcrSettings

DEFAULT_TARGET = "pipelines.parse:parse_file"
PRELOAD_MODULE = "pipelines.parse_preload"
START_METHODS = ("forkserver", "spawn")

log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class _Request:
    """One document for the child: plain values only (no ACLs cross the process boundary)."""

    path: str
    doc_id: str
    version: str
    doc_type: str | None
    title: str | None
    limits: LimitsConfig
    ocr: OcrSettings = dataclasses.field(default_factory=OcrSettings)


# ---------------------------------------------------------------- child process


def _resolve(target: str) -> Callable[..., ParsedDocument]:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"parse target must be 'module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def _serve(conn: Connection, target: str) -> None:
    """The child's loop: parse each request; exit when the parent closes the pipe."""
    # lazy: the worker sets the offline environment before unstructured and spaCy load
    from core.runtime import configure_offline_environment
    from pipelines.offline_nlp import import_spacy_without_torch

    # Done already when forked from the preloaded forkserver; a spawned worker (and
    # each restart after a kill) pays for its imports: keep them lean.
    configure_offline_environment()
    import_spacy_without_torch()
    parse = _resolve(target)
    conn.send(("ready", None))
    _answer(conn, parse)
    # Stopped (or the parent went away): exit without the interpreter's teardown of
    # every module imported, which takes longer than anything else in a stop
    # (docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way). Nothing in the child
    # needs it: results went back over the pipe.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os._exit(0)


def _answer(conn: Connection, parse: Callable[..., ParsedDocument]) -> None:
    """Parse each request and send the reply, until the parent says stop or closes the pipe."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        reply = _handle(parse, request)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable result: still answer the parent
            conn.send(("error", "parser_crash", f"cannot return the parse: {exc!r}", None))


def _handle(parse: Callable[..., ParsedDocument], request: _Request) -> tuple[Any, ...]:
    # lazy: the worker sets the offline environment before unstructured loads
    from pipelines.guard import check_parsed

    name = Path(request.path).name
    try:
        parsed = parse(
            Path(request.path),
            doc_id=request.doc_id,
            version=request.version,
            doc_type=request.doc_type,
            title=request.title,
            max_chars=request.limits.max_chars,
            max_line_chars=request.limits.max_line_chars,
            ocr=request.ocr,
            limits=request.limits,
        )
        check_parsed(parsed, request.limits, name)
    except ParseError as exc:
        return ("error", exc.reason_class, str(exc), exc.path)
    except Exception as exc:  # RecursionError, MemoryError's cousins, parser bugs
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return (
            "error",
            "parser_crash",
            f"parser error on {name!r}: {type(exc).__name__}: {detail}",
            None,
        )
    return ("ok", parsed)


# ---------------------------------------------------------------- parent side


class ParseWorker:
    """A persistent parser subprocess with a per-document wall-clock timeout.

    Thread-safe (one document at a time). Failures of the process become
    :class:`ParseError` (``timeout``, ``parser_crash``); nothing else escapes.

    :param target: ``"module:function"`` called in the child as
        ``func(path, doc_id=, version=, doc_type=, title=, max_chars=, max_line_chars=)``;
        tests point it at misbehaving parsers.
    :param start_timeout_s: how long a fresh child may take to import and say ready;
        a child that waits for the forkserver's preload to finish may wait as long
        again, after which the forkserver is killed and the child spawned instead.
    :param start_method: ``"forkserver"`` or ``"spawn"``; default
        :func:`default_start_method`. :attr:`start_method` then says how the current
        (or last) child was started: ``spawn`` after a fall-back.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        start_timeout_s: float = 120.0,
        start_method: str | None = None,
    ) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s}")
        method = start_method or default_start_method()
        available = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
        if method not in available:
            raise ValueError(f"start_method must be one of {available}, got {method!r}")
        self.target = target
        self.start_timeout_s = start_timeout_s
        self._requested = self.start_method = method
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._finalizer: weakref.finalize | None = None
        self.starts = 0  # how many children were started (restarts show up here)

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        """The live child's process id, or None when none is running."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child now (otherwise the first :meth:`parse` does)."""
        with self._lock:
            self._ensure_started()

    def close(self) -> None:
        """Stop the child: ask it to exit, and kill it if it does not within a second."""
        with self._lock:
            self._stop(graceful=True)

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- parsing

    def parse(
        self, doc: SourceDocument, limits: LimitsConfig, ocr: OcrSettings | None = None
    ) -> ParsedDocument:
        """Parse ``doc.local_path`` in the child within ``limits.timeout_s``.

        ``ocr`` is the source's OCR setting (default ``auto``), passed to the parser.

        :raises ParseError: the parser's own reason, or ``timeout`` / ``parser_crash``
            when the child had to be killed or died; the next call starts a new child.
        """
        if doc.local_path is None:
            raise ParseError(f"document {doc.doc_id!r} has no local file to parse", path=doc.path)
        request = _Request(
            path=str(doc.local_path),
            doc_id=doc.doc_id,
            version=doc.version,
            doc_type=doc.doc_type or None,
            title=doc.title or None,
            limits=limits,
            ocr=ocr or OcrSettings(),
        )
        with self._lock:
            conn = self._send(request)
            reply = self._await(conn, limits.timeout_s, Path(doc.local_path).name)
        if reply[0] == "ok":
            return reply[1]
        _, reason_class, reason, path = reply
        raise ParseError(reason, path=path or doc.path, reason_class=reason_class)

    def _send(self, request: _Request) -> Connection:
        """Send to the child; a child found dead between documents is replaced once."""
        for attempt in (1, 2):
            conn = self._ensure_started()
            try:
                conn.send(request)
                return conn
            except (BrokenPipeError, EOFError, OSError):
                self._stop(graceful=False)
                if attempt == 2:
                    raise ParserCrashError(
                        f"the parser process would not accept {Path(request.path).name!r}",
                        path=request.path,
                    ) from None
        raise AssertionError("unreachable")

    def _await(self, conn: Connection, timeout_s: float, name: str) -> tuple[Any, ...]:
        process = self._process
        assert process is not None
        ready = wait([conn, process.sentinel], timeout=timeout_s)
        if conn in ready:
            try:
                return conn.recv()
            except (EOFError, OSError):
                pass  # the child died mid-reply: report it as a crash below
        if not ready:
            self._stop(graceful=False)
            raise ParseTimeoutError(
                f"parsing {name!r} took longer than {timeout_s:g} s (limits.timeout_s); "
                "the parser process was killed"
            )
        process.join(timeout=5)
        how = _describe_exit(process.exitcode)
        self._stop(graceful=False)
        raise ParserCrashError(f"the parser process died while parsing {name!r} ({how})")

    # -- process management (caller holds the lock)

    def _ensure_started(self) -> Connection:
        if self._process is not None and self._conn is not None and self._process.is_alive():
            return self._conn
        self._stop(graceful=False)
        process, parent_conn = self._launch()
        self._process, self._conn = process, parent_conn
        self._finalizer = weakref.finalize(self, _kill, process, parent_conn)
        self.starts += 1
        if not wait([parent_conn, process.sentinel], timeout=self.start_timeout_s):
            self._stop(graceful=False)
            raise ParserCrashError(
                f"the parser process did not start within {self.start_timeout_s:g} s"
            )
        try:
            message = parent_conn.recv()
        except (EOFError, OSError):
            message = None
        if message != ("ready", None):
            process.join(timeout=5)
            how = _describe_exit(process.exitcode)
            self._stop(graceful=False)
            raise ParserCrashError(f"the parser process failed to start ({how})")
        return parent_conn

    def _launch(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        """A started child and our end of its pipe: forked by the forkserver, else spawned."""
        if self._requested == "forkserver" and _ensure_forkserver():
            try:
                return self._start_with(multiprocessing.get_context("forkserver"))
            except (OSError, EOFError) as exc:  # it died, or was killed as hung
                _give_up_forkserver(f"failed to start a parse worker ({exc!r})")
        return self._start_with(_SPAWN)

    def _start_with(
        self,
        context: multiprocessing.context.SpawnContext | multiprocessing.context.ForkServerContext,
    ) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        method = context.get_start_method()
        parent_conn, child_conn = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve, args=(child_conn, self.target), name="trove-parse-worker", daemon=True
        )
        try:
            if method == "forkserver":
                _start_forked(process, self.start_timeout_s)
            else:
                process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # so the parent sees EOF when the child dies
        self.start_method = method
        return process, parent_conn

    def _stop(self, *, graceful: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is None:
            return
        if graceful and conn is not None and process.is_alive():
            try:
                conn.send(None)
                process.join(timeout=1.0)
            except (BrokenPipeError, EOFError, OSError):
                pass  # already gone: the kill below is a no-op
        _kill(process, conn)


def _kill(process: multiprocessing.process.BaseProcess, conn: Connection | None) -> None:
    if process.is_alive():
        process.kill()  # SIGKILL: a hung C parser ignores anything gentler
    process.join(timeout=5)
    if conn is not None:
        conn.close()
    if process.exitcode is not None:
        process.close()  # release its sentinel fd


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", likely the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


# ---------------------------------------------------------------- the forkserver

_forkserver_lock = threading.Lock()
_forkserver_unusable: str | None = None  # why workers are spawned from now on
_idle_forkserver: int | None = None  # the pid of ours while it has forked no worker
_exit_hook_pid: int | None = None


def default_start_method() -> str:
    """How workers start: ``forkserver`` where the platform has one, else ``spawn`` (Windows)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def prestart_parse_workers() -> bool:
    """Start the parse workers' forkserver now, so that its imports overlap the caller's.

    The forkserver's preload (:mod:`pipelines.parse_preload`) spends seconds of CPU,
    once, importing spaCy and unstructured and warming up the common partitioners;
    every worker is then forked from it ready to parse. Without this call that
    happens when the first worker starts, and the parse stage waits for it. Called
    at the top of :func:`trove.ingest.run_ingest`, it runs on an otherwise idle
    core while the caller imports Dagster, creates its instance and scans the
    sources, single-threaded. Returns at once: the preload runs in the background.

    The price: that CPU is spent even when the scan finds nothing to parse (an
    unchanged re-sync), and the forkserver (its memory mostly shared with the
    workers) lives as long as the calling process
    (docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way). A caller that knows nothing
    will be parsed can skip this: workers start the forkserver on first use anyway.

    :returns: True when the forkserver runs (or is starting); False where workers
        are spawned instead (no forkserver on this platform, or it failed before).
    """
    return default_start_method() == "forkserver" and _ensure_forkserver()


def _ensure_forkserver() -> bool:
    """Start the forkserver with our preload unless it runs; False: spawn workers instead."""
    from multiprocessing import forkserver

    global _idle_forkserver
    with _forkserver_lock:
        if _forkserver_unusable is not None:
            return False
        _add_preload(forkserver)
        before = _forkserver_pid(forkserver)
        try:
            forkserver.ensure_running()
        except (OSError, ValueError) as exc:
            _give_up_forkserver(f"did not start ({exc!r})")
            return False
        after = _forkserver_pid(forkserver)
        if after is not None and after != before:
            _idle_forkserver = after
            _stop_idle_forkserver_at_exit()
    return True


def _add_preload(forkserver: ModuleType) -> None:
    # The list is process-wide and each call replaces it: keep what others asked for,
    # with ours first (it imports spaCy before anything can import torch). It applies
    # when the forkserver starts; one already running (without it) still works: its
    # workers import everything themselves, as spawned ones do.
    current = list(getattr(forkserver._forkserver, "_preload_modules", None) or ())
    if PRELOAD_MODULE not in current:
        forkserver.set_forkserver_preload([PRELOAD_MODULE, *current])


def _forkserver_pid(forkserver: ModuleType) -> int | None:
    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def _give_up_forkserver(why: str) -> None:
    global _forkserver_unusable
    if _forkserver_unusable is None:
        log.warning(
            "parse workers are spawned from now on (slower to start): the forkserver %s", why
        )
    _forkserver_unusable = why


def _start_forked(process: multiprocessing.process.BaseProcess, timeout_s: float) -> None:
    """``process.start()`` through the forkserver, in at most ``timeout_s``.

    The forkserver forks only once its preload is done, and ``start`` waits for
    that: a hung preload would hang the caller. Past ``timeout_s`` the forkserver
    is killed, which makes ``start`` raise ``EOFError``.
    """
    from multiprocessing import forkserver

    global _idle_forkserver
    pid = _forkserver_pid(forkserver)
    killed = threading.Event()

    def kill_forkserver() -> None:
        if pid is not None:
            killed.set()
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill_forkserver)
    timer.daemon = True
    timer.start()
    try:
        process.start()
    finally:
        timer.cancel()
    if killed.is_set():  # it forked just as the timer fired: the forkserver is gone anyway
        with contextlib.suppress(OSError):
            if process.pid is not None:
                os.kill(process.pid, signal.SIGKILL)
        raise EOFError("the forkserver was killed: it did not start a worker in time")
    _idle_forkserver = None


def _stop_idle_forkserver_at_exit() -> None:
    global _exit_hook_pid
    if _exit_hook_pid != os.getpid():
        _exit_hook_pid = os.getpid()
        atexit.register(_stop_idle_forkserver, os.getpid())


def _stop_idle_forkserver(owner: int) -> None:
    """At exit: kill our forkserver if it never forked a worker (it may still be preloading).

    It would exit by itself once we are gone, but only after its preload: seconds
    in which it holds our stdout and stderr open, so that whoever reads our output
    to the end (a shell pipe, ``subprocess.run``) waits for it. One that forked
    workers is left alone: its preload is over, it exits with them, and it is what
    reports their exit (so that a hung one can still be killed).
    """
    from multiprocessing import forkserver

    pid = _idle_forkserver
    if os.getpid() != owner or pid is None or pid != _forkserver_pid(forkserver):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    server: Any = forkserver._forkserver  # its private _stop() is not in the type stubs
    with contextlib.suppress(Exception):
        server._stop()  # reaps it, closes our end, removes its socket file


# ---------------------------------------------------------------- ingestion entry point


def default_workers() -> int:
    """How many parse workers ingestion runs: one per core (``os.cpu_count()``), at least 1."""
    return max(1, os.cpu_count() or 1)


class GuardedParser:
    """``parse(doc)`` for :func:`pipelines.stages.parse_pending`: guard checks, then a worker.

    Holds one or more :class:`ParseWorker`; calls are thread-safe, and up to
    :attr:`concurrency` of them parse at once, each in its own worker process.
    A context manager; :meth:`close` stops every worker. Timings of the last run
    are in :attr:`seconds` (guard and worker, summed over documents, so with
    several workers their sum can exceed the wall time).

    :param worker: a single worker (the pool then has just that one).
    :param workers: the pool's workers; give ``worker`` or ``workers``, not both.
    """

    def __init__(
        self,
        limits: LimitsConfig,
        worker: ParseWorker | None = None,
        *,
        workers: Sequence[ParseWorker] | None = None,
    ) -> None:
        if worker is not None and workers is not None:
            raise ValueError("give either worker or workers, not both")
        if workers is not None:
            pool = tuple(workers)
            if not pool:
                raise ValueError("a GuardedParser needs at least one worker")
        else:
            pool = (worker if worker is not None else ParseWorker(),)
        self.limits = limits
        self.workers = pool
        self.worker = pool[0]
        # Last in, first out: the warm worker just returned is reused before a cold one.
        self._idle: queue.LifoQueue[ParseWorker] = queue.LifoQueue()
        for each in reversed(pool):
            self._idle.put(each)
        self._seconds_lock = threading.Lock()
        self.seconds = {"guard": 0.0, "worker": 0.0}

    @property
    def concurrency(self) -> int:
        """How many documents can be parsed at once (calls from that many threads)."""
        return len(self.workers)

    ocr: OcrSettings = OcrSettings()
    """The source's OCR setting, sent with each document (set it after construction)."""

    def __call__(self, doc: SourceDocument) -> ParsedDocument:
        # lazy: the worker sets the offline environment before unstructured loads
        from pipelines.local_file import private_copy

        if doc.local_path is None:
            raise ParseError(f"document {doc.doc_id!r} has no local file to parse", path=doc.path)
        # Guard and parser read a private copy made through a descriptor opened without
        # links and checked against the scan's identity: never the path again.
        with private_copy(doc.local_path, doc.identity, max_bytes=self.limits.max_bytes) as copy:
            return self._parse_copy(dataclasses.replace(doc, local_path=copy))

    def _parse_copy(self, doc: SourceDocument) -> ParsedDocument:
        # lazy: the worker sets the offline environment before unstructured loads
        from pipelines.guard import check_document

        assert doc.local_path is not None
        kind = (doc.doc_type or doc.local_path.suffix).lower().lstrip(".")
        started = time.perf_counter()
        try:
            check_document(doc.local_path, kind, self.limits)
        finally:
            self._add_seconds("guard", started)
        limits = self.limits
        if self.ocr.mode != "off" and (kind == "pdf" or kind in IMAGE_TYPES):
            # The child bounds OCR itself (limits.ocr_page_timeout_s per page, at most
            # limits.ocr_timeout_s: reason ocr_timeout); the kill waits for that too.
            limits = limits.model_copy(
                update={"timeout_s": limits.timeout_s + limits.ocr_timeout_s}
            )
        worker = self._idle.get()
        started = time.perf_counter()
        try:
            parsed = worker.parse(doc, limits, self.ocr)
        finally:
            self._add_seconds("worker", started)
            self._idle.put(worker)
        if parsed.ocr_pages or parsed.ocr_pages_skipped:
            with self._seconds_lock:
                totals = self.ocr_totals
                totals["documents_ocr"] += 1 if parsed.ocr_pages else 0
                totals["pages_ocr"] += parsed.ocr_pages
                totals["pages_needing_ocr"] += parsed.ocr_pages_skipped
                totals["ocr_seconds"] += parsed.ocr_seconds
        return parsed

    @functools.cached_property
    def ocr_totals(self) -> dict[str, float]:
        """What OCR did in this parser's documents: documents, pages, seconds (summed).

        ``pages_needing_ocr``: scanned pages of mixed PDFs left out (OCR off or missing).
        """
        return {"documents_ocr": 0, "pages_ocr": 0, "pages_needing_ocr": 0, "ocr_seconds": 0.0}

    def _add_seconds(self, what: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        with self._seconds_lock:
            self.seconds[what] += elapsed

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> GuardedParser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def make_parse_fn(
    limits: LimitsConfig, *, target: str = DEFAULT_TARGET, workers: int | None = None
) -> GuardedParser:
    """A parse function for :func:`~pipelines.stages.parse_pending` that enforces ``limits``.

    :param workers: parser processes in the pool (default :func:`default_workers`,
        one per core); each starts on first use.

    Use it as a context manager so the worker processes are stopped afterwards.
    """
    count = default_workers() if workers is None else workers
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    return GuardedParser(limits, workers=[ParseWorker(target) for _ in range(count)])
