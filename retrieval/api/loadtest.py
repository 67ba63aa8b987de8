"""A bounded load test of ``POST /v1/search``, for loopback servers only.

``clients`` concurrent workers (asyncio + httpx) send searches in a loop for
``duration_s`` seconds, cycling through ``(query, token)`` pairs. The report
counts every response by status and gives throughput and latency percentiles.
Any status other than 200, and any transport error, is an error.

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
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.errors import TroveError
from retrieval.evaluate import percentile

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


async def _search(client: httpx.AsyncClient, probe: Probe) -> str:
    """One ``POST /v1/search``; its outcome: the status code, ``"200"`` for success."""
    response = await client.post(
        "/v1/search",
        json={"query": probe.query, "top_k": probe.top_k},
        headers={"Authorization": f"Bearer {probe.token}"},
    )
    return str(response.status_code)


def mcp_search(path: str = "/mcp") -> Callable[[httpx.AsyncClient, Probe], Awaitable[str]]:
    """One ``search_knowledge`` tool call over streamable HTTP (stateless JSON-RPC).

    A tool error (``isError``) or a JSON-RPC error counts as ``"tool_error"``: a 200
    that carries no answer is not a success.
    """
    counter = itertools.count(1)

    async def call(client: httpx.AsyncClient, probe: Probe) -> str:
        response = await client.post(
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
        )
        if response.status_code != 200:
            return str(response.status_code)
        body = response.json()
        if "error" in body or body.get("result", {}).get("isError"):
            return "tool_error"
        return "200"

    return call


async def _worker(
    client: httpx.AsyncClient,
    send: Callable[[httpx.AsyncClient, Probe], Awaitable[str]],
    probes: Sequence[Probe],
    offset: int,
    deadline: float,
    latencies: list[float],
    statuses: Counter[str],
) -> None:
    i = offset
    while time.perf_counter() < deadline:
        probe = probes[i % len(probes)]
        i += 1
        started = time.perf_counter()
        try:
            statuses[await send(client, probe)] += 1
        except httpx.HTTPError as exc:
            statuses[f"error:{type(exc).__name__}"] += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)


async def _run(
    url: str,
    probes: Sequence[Probe],
    clients: int,
    duration_s: float,
    send: Callable[[httpx.AsyncClient, Probe], Awaitable[str]] = _search,
) -> dict:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(
            *(
                _worker(client, send, probes, n * 7, deadline, latencies, statuses)
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
    send: Callable[[httpx.AsyncClient, Probe], Awaitable[str]] | None = None,
) -> dict[str, Any]:
    """Run the load test and return its JSON-ready report.

    :param send: one request (default ``POST /v1/search``; :func:`mcp_search` for MCP).

    :raises LoadTestError: a non-loopback ``url``, no probes, or bounds out of range.
    """
    check_target(url, clients, duration_s)
    if not probes:
        raise LoadTestError("the load test needs at least one query")
    return asyncio.run(_run(url.rstrip("/"), list(probes), clients, duration_s, send or _search))
