"""``trove bench serve``: what the HTTP API and MCP add to the search they wrap.

On one index, for the same golden queries and principals:

1. **In process** (this process, no HTTP): the engine alone
   (:meth:`~retrieval.search.Searcher.search_ranked`, the candidates a service search
   asks for) and the whole service (:meth:`~retrieval.service.RetrievalService.search`:
   rerank, merge, cap, audit), one thread at a time for latency and with
   ``threads`` threads for throughput.
2. **HTTP**: a real ``trove serve`` child process on loopback, loaded by 1 and by
   ``clients`` concurrent clients (:mod:`retrieval.api.loadtest`).
3. **MCP**: a real ``trove mcp --transport http`` child, ``search_knowledge`` tool
   calls over streamable HTTP, by 1 and by ``clients`` clients.

Each phase reports throughput, p50/p95/p99 latency, errors, and the serving
process's CPU-seconds per request (children included). The load generator shares
the machine's cores with the server, as any loopback load test does: its own CPU
is reported too. Tokens are minted with a throwaway key, the per-principal rate
limit is lifted, and the audit log stays on (in a temporary folder): it is part of
what a request costs.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from retrieval.evaluate import percentile
from trove.bench.errors import BenchError

DEFAULT_DURATION_S = 15.0
DEFAULT_CLIENTS = 16
DEFAULT_THREADS = 2
READY_TIMEOUT_S = 180.0


class ServeBenchError(BenchError):
    """The benchmark could not run (no index, a server that did not start...)."""


@dataclass(frozen=True)
class Asker:
    """One golden query and who asks it."""

    query: str
    user: str
    groups: tuple[str, ...]
    tenant: str | None
    top_k: int = 8


def _latency(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"p50": None, "p95": None, "p99": None}
    return {p: round(percentile(list(latencies_ms), int(p[1:])), 2) for p in ("p50", "p95", "p99")}


def _process_cpu_s(proc: psutil.Process | None = None) -> float:
    """CPU-seconds (user + system) of ``proc`` and its children (worker processes);
    without ``proc``, of this process alone (not the servers it started)."""
    if proc is None:
        t = psutil.Process().cpu_times()
        return t.user + t.system
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def closed_loop(
    call: Callable[[Asker], Any], askers: Sequence[Asker], threads: int, duration_s: float
) -> dict[str, Any]:
    """``threads`` threads each calling ``call`` back to back for ``duration_s`` seconds."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + duration_s

    def loop(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < deadline:
            asker = askers[i % len(askers)]
            i += 1
            started = time.perf_counter()
            try:
                call(asker)
            except Exception:  # counted: a benchmark reports failures, it does not hide them
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - started) * 1000.0)

    cpu_before = _process_cpu_s()
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, [n * 7 for n in range(threads)]))
    elapsed = time.perf_counter() - started
    cpu = _process_cpu_s() - cpu_before
    requests = len(latencies) + errors
    return {
        "threads": threads,
        "requests": requests,
        "errors": errors,
        "throughput_rps": round(requests / elapsed, 2),
        "latency_ms": _latency(latencies),
        "cpu_ms_per_request": round(1000.0 * cpu / requests, 2) if requests else None,
    }


def in_process(settings: Any, askers: Sequence[Asker], threads: int, duration_s: float) -> dict:
    """The engine and the whole service in this process: 1 thread and ``threads``."""
    from core.acl import Principal
    from retrieval.models import NO_FILTERS
    from trove.wiring import build_retrieval_service

    service = build_retrieval_service(settings)
    principals = {a: Principal.of(a.user, list(a.groups), a.tenant) for a in set(askers)}
    try:

        def engine(a: Asker) -> Any:
            # The candidates RetrievalService.search asks the searcher for.
            depth = max(3 * a.top_k, 24)
            return service.searcher.search_ranked(a.query, principals[a], depth, NO_FILTERS)

        def whole(a: Asker) -> Any:
            return service.search(principals[a], a.query, top_k=a.top_k)

        for a in askers[:4]:  # first touches of the index pages and model
            engine(a)
            whole(a)
        return {
            "engine_1_thread": closed_loop(engine, askers, 1, duration_s),
            f"engine_{threads}_threads": closed_loop(engine, askers, threads, duration_s),
            "service_1_thread": closed_loop(whole, askers, 1, duration_s),
            f"service_{threads}_threads": closed_loop(whole, askers, threads, duration_s),
        }
    finally:
        service.close()


def _index_chunks(settings: Any) -> int:
    from retrieval.index.factory import open_index

    index = open_index(settings.index)
    try:
        return index.stats().chunks
    finally:
        index.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def child_server(
    args: list[str], env: dict[str, str], ready_url: str, log: Path
) -> Iterator[psutil.Process]:
    """A ``python -m trove ...`` child serving on loopback; stopped (and its children) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trove", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise ServeBenchError(
                    f"`trove {' '.join(args)}` exited with {proc.returncode}: "
                    f"{log.read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(ready_url, timeout=2.0).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServeBenchError(f"`trove {' '.join(args)}` did not answer {ready_url}")
            time.sleep(0.25)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loaded(
    url: str,
    probes: Sequence[Any],
    server: psutil.Process,
    clients: Sequence[int],
    duration_s: float,
    send: Any = None,
) -> dict[str, Any]:
    """The load test at each client count, with server and client CPU per request."""
    from retrieval.api.loadtest import run_load_test

    run_load_test(url, probes, clients=2, duration_s=min(2.0, duration_s), send=send)  # warm
    out = {}
    for n in clients:
        server_before, client_before = _process_cpu_s(server), _process_cpu_s()
        report = run_load_test(url, probes, clients=n, duration_s=duration_s, send=send)
        server_cpu = _process_cpu_s(server) - server_before
        client_cpu = _process_cpu_s() - client_before
        requests = max(report["requests"], 1)
        report["server_cpu_ms_per_request"] = round(1000.0 * server_cpu / requests, 2)
        report["client_cpu_ms_per_request"] = round(1000.0 * client_cpu / requests, 2)
        report.pop("url", None)
        out[f"{n}_clients"] = report
    return out


def run(
    config: Path,
    queries: Path,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    clients: int = DEFAULT_CLIENTS,
    threads: int = DEFAULT_THREADS,
    workers: int | None = None,
    mcp: bool = True,
) -> dict[str, Any]:
    """Run every phase on the index ``config`` names; the JSON-ready report.

    :param workers: ``trove serve --workers`` (default: the server's own default).
    """
    from pydantic import SecretStr

    from retrieval.api.loadtest import Probe, mcp_search
    from retrieval.auth import mint_token
    from retrieval.evaluate import load_queries
    from trove.config import load_settings

    golden = load_queries(queries)
    askers = [Asker(q.query, q.user, tuple(q.groups), q.tenant) for q in golden]
    secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="trove-bench-serve-") as tmp:
        work = Path(tmp)
        overrides = {
            "TROVE_API__JWT_SECRET": secret,
            "TROVE_API__RATE_LIMIT_PER_MINUTE": "100000000",
            "TROVE_API__UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE": "100000000",
            "TROVE_API__AUDIT_LOG": str(work / "audit.jsonl"),
            "TROVE_CONFIG": str(Path(config).resolve()),
        }
        settings = load_settings(config)
        settings.api.jwt_secret = SecretStr(secret)
        settings.api.rate_limit_per_minute = 100_000_000
        settings.api.audit_log = work / "audit-in-process.jsonl"
        if settings.index.path is not None and not settings.index.path.is_absolute():
            raise ServeBenchError("give the index an absolute path in the bench config")
        probes = [
            Probe(
                a.query,
                mint_token(
                    secret,
                    a.user,
                    list(a.groups),
                    tenant=a.tenant,
                    audience=settings.api.jwt_audience,
                    issuer=settings.api.jwt_issuer,
                    ttl=timedelta(hours=2),
                ),
            )
            for a in askers
        ]
        report: dict[str, Any] = {
            "config": str(config),
            "queries": len(askers),
            "duration_s": duration_s,
            "cpus": os.cpu_count(),
        }
        report["in_process"] = in_process(settings, askers, threads, duration_s)
        report["index_chunks"] = _index_chunks(settings)
        env = {**os.environ, **overrides}
        port = free_port()
        serve_args = ["serve", "--port", str(port)]
        if workers is not None:
            serve_args += ["--workers", str(workers)]
        url = f"http://127.0.0.1:{port}"
        with child_server(serve_args, env, url + "/readyz", work / "serve.log") as server:
            report["http"] = loaded(url, probes, server, (1, clients), duration_s)
        if mcp:
            port = free_port()
            mcp_args = ["mcp", "--transport", "http", "--port", str(port)]
            mcp_url = f"http://127.0.0.1:{port}"
            with child_server(mcp_args, env, mcp_url + "/mcp", work / "mcp.log") as server:
                report["mcp"] = loaded(
                    mcp_url, probes, server, (1, clients), duration_s, send=mcp_search()
                )
    report["summary"] = summary(report, threads, clients)
    return report


def summary(report: dict[str, Any], threads: int, clients: int) -> dict[str, Any]:
    """The issue's targets as ratios against the in-process engine, measured in this run."""
    engine_1 = report["in_process"]["engine_1_thread"]
    engine_n = report["in_process"][f"engine_{threads}_threads"]
    out: dict[str, Any] = {}
    for edge in ("http", "mcp"):
        if edge not in report:
            continue
        one = report[edge]["1_clients"]
        many = report[edge][f"{clients}_clients"]
        out[edge] = {
            f"throughput_{clients}_clients_vs_engine_{threads}_threads": round(
                many["throughput_rps"] / engine_n["throughput_rps"], 3
            ),
            f"p95_ms_{clients}_clients": many["latency_ms"]["p95"],
            "p50_1_client_vs_engine_1_thread": round(
                one["latency_ms"]["p50"] / engine_1["latency_ms"]["p50"], 3
            ),
            "errors": one["errors"] + many["errors"],
        }
    return out
