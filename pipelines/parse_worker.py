"""Parsing in a separate, killable process with a wall-clock timeout.

A parser that hangs, segfaults or is killed for memory must cost one document,
never the run. :class:`ParseWorker` keeps one long-lived child process (the
``spawn`` start method: no copy of the caller's threads or locks) that imports
unstructured once and parses the documents sent to it, one at a time. For each
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

A worker's first document of each type also pays for importing that unstructured
partitioner (seconds), inside ``timeout_s``; keep the timeout well above that.
Workers start on first use, and the most recently used idle worker is reused
first, so a run with fewer documents than cores starts no more workers than it
can use at once.
"""

from __future__ import annotations

import contextlib
import importlib
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
from types import TracebackType
from typing import Any

from connectors.models import SourceDocument
from pipelines.errors import ParseError, ParserCrashError, ParseTimeoutError
from pipelines.models import ParsedDocument
from trove.config import LimitsConfig

DEFAULT_TARGET = "pipelines.parse:parse_file"
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class _Request:
    """One document for the child: plain values only (no ACLs cross the process boundary)."""

    path: str
    doc_id: str
    version: str
    doc_type: str | None
    title: str | None
    limits: LimitsConfig


# ---------------------------------------------------------------- child process


def _resolve(target: str) -> Callable[..., ParsedDocument]:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"parse target must be 'module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def _serve(conn: Connection, target: str) -> None:
    """The child's loop: parse each request; exit when the parent closes the pipe."""
    from pipelines.offline_nlp import import_spacy_without_torch
    from trove.runtime import configure_offline_environment

    configure_offline_environment()
    # Each worker (and each restart after a kill) pays for its imports: keep them lean.
    import_spacy_without_torch()
    parse = _resolve(target)
    conn.send(("ready", None))
    _answer(conn, parse)
    # Stopped (or the parent went away): exit without the interpreter's teardown of
    # every module imported, which takes longer than anything else in a stop (~0.4 s
    # per worker). Nothing in the child needs it: results went back over the pipe.
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
    :param start_timeout_s: how long a fresh child may take to import and say ready.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, start_timeout_s: float = 120.0) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s}")
        self.target = target
        self.start_timeout_s = start_timeout_s
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

    def parse(self, doc: SourceDocument, limits: LimitsConfig) -> ParsedDocument:
        """Parse ``doc.local_path`` in the child within ``limits.timeout_s``.

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
        parent_conn, child_conn = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=_serve, args=(child_conn, self.target), name="trove-parse-worker", daemon=True
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the child dies
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

    def __call__(self, doc: SourceDocument) -> ParsedDocument:
        from pipelines.guard import check_document

        if doc.local_path is None:
            raise ParseError(f"document {doc.doc_id!r} has no local file to parse", path=doc.path)
        started = time.perf_counter()
        try:
            check_document(doc.local_path, doc.doc_type or doc.local_path.suffix, self.limits)
        finally:
            self._add_seconds("guard", started)
        worker = self._idle.get()
        started = time.perf_counter()
        try:
            return worker.parse(doc, self.limits)
        finally:
            self._add_seconds("worker", started)
            self._idle.put(worker)

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
