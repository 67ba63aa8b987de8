"""A bounded load test of ``POST /v1/search``, for loopback servers only.

``clients`` concurrent workers (asyncio + aiohttp) send searches in a loop for
``duration_s`` seconds, cycling through ``(query, token)`` pairs. The report
counts every response by status and gives throughput and latency percentiles.
Any status other than 200, and any transport error, is an error.

The load generator shares the machine with the server it measures, so it must
cost far less than the server per request: aiohttp's client costs a small
fraction of httpx's CPU per request (measured in docs/benchmarks.md, "trove bench
serve").

Refuses any host but 127.0.0.1 / ::1 / localhost, and caps clients and duration,
so it can never be pointed at someone else's service or run unbounded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from core.errors import TroveError
from retrieval.evaluate import percentile

if TYPE_CHECKING:
    import aiohttp

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_CLIENTS = 64
MAX_DURATION_S = 120.0


class LoadTestError(TroveError, ValueError):
    """The load test was asked for a non-loopback target or out-of-range bounds."""


@dataclass(frozen=True)
class Probe:
    query: str
    token: str
    top_k: int = 8


def check_target(url: str, clients: int, duration_s: float) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise LoadTestError(f"load tests only target loopback (127.0.0.1), got host {host!r}")
    if not 1 <= clients <= MAX_CLIENTS:
        raise LoadTestError(f"clients must be within [1, {MAX_CLIENTS}], got {clients}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise LoadTestError(f"duration must be within (0, {MAX_DURATION_S}] s, got {duration_s}")


# aiohttp is imported when a load test runs: `trove` imports this module for its errors.
Send = Callable[["aiohttp.ClientSession", Probe], Awaitable[str]]


async def _search(session: aiohttp.ClientSession, probe: Probe) -> str:
    """One ``POST /v1/search``; its outcome: the status code, ``"200"`` for success."""
    async with session.post(
        "/v1/search",
        json={"query": probe.query, "top_k": probe.top_k},
        headers={"Authorization": f"Bearer {probe.token}"},
    ) as response:
        await response.read()
        return str(response.status)


def mcp_search(path: str = "/mcp") -> Send:
    """One ``search_knowledge`` tool call over streamable HTTP (stateless JSON-RPC).

    A tool error (``isError``) or a JSON-RPC error counts as ``"tool_error"``: a 200
    that carries no answer is not a success.
    """
    counter = itertools.count(1)

    async def call(session: aiohttp.ClientSession, probe: Probe) -> str:
        async with session.post(
            path,
            json={
                "jsonrpc": "2.0",
                "id": next(counter),
                "method": "tools/call",
                "params": {
                    "name": "search_knowledge",
                    "arguments": {"query": probe.query, "top_k": probe.top_k},
                },
            },
            headers={
                "Authorization": f"Bearer {probe.token}",
                "Accept": "application/json, text/event-stream",
            },
        ) as response:
            if response.status != 200:
                await response.read()
                return str(response.status)
            body = await response.json()
        if "error" in body or body.get("result", {}).get("isError"):
            return "tool_error"
        return "200"

    return call


async def _worker(
    session: aiohttp.ClientSession,
    send: Send,
    probes: Sequence[Probe],
    offset: int,
    deadline: float,
    latencies: list[float],
    statuses: Counter[str],
) -> None:
    import aiohttp

    i = offset
    while time.perf_counter() < deadline:
        probe = probes[i % len(probes)]
        i += 1
        started = time.perf_counter()
        try:
            statuses[await send(session, probe)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses[f"error:{type(exc).__name__}"] += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)


async def _run(
    url: str,
    probes: Sequence[Probe],
    clients: int,
    duration_s: float,
    send: Send = _search,
) -> dict:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(
            *(
                _worker(session, send, probes, n * 7, deadline, latencies, statuses)
                for n in range(clients)
            )
        )
        elapsed = time.perf_counter() - started
    requests = sum(statuses.values())
    errors = requests - statuses.get("200", 0)
    return {
        "url": url,
        "clients": clients,
        "duration_s": round(elapsed, 3),
        "requests": requests,
        "errors": errors,
        "statuses": dict(sorted(statuses.items())),
        "throughput_rps": round(requests / elapsed, 2) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2) if latencies else None,
            "p95": round(percentile(latencies, 95), 2) if latencies else None,
            "p99": round(percentile(latencies, 99), 2) if latencies else None,
            "max": round(max(latencies), 2) if latencies else None,
        },
    }


def run_load_test(
    url: str,
    probes: Sequence[Probe],
    *,
    clients: int = 16,
    duration_s: float = 30.0,
    send: Send | None = None,
) -> dict[str, Any]:
    """Run the load test and return its JSON-ready report.

    :param send: one request (default ``POST /v1/search``; :func:`mcp_search` for MCP).

    :raises LoadTestError: a non-loopback ``url``, no probes, or bounds out of range.
    """
    check_target(url, clients, duration_s)
    if not probes:
        raise LoadTestError("the load test needs at least one query")
    return asyncio.run(_run(url.rstrip("/"), list(probes), clients, duration_s, send or _search))
