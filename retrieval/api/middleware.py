"""Pure ASGI middleware: request body size limit, request metrics by route template, and
a per-address limit on failed authentications (shared by the HTTP API and MCP over HTTP)."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.api.metrics import ApiMetrics
from retrieval.audit import AuditError, client_address

logger = logging.getLogger(__name__)

MAX_TRACKED_ADDRESSES = 10_000
IPV6_PREFIX = 64  # one IPv6 host usually holds a whole /64: count it as one address


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _StatusOf:
    """An ASGI ``send`` that passes every message on and remembers the response status."""

    def __init__(self, send: Send, default: int) -> None:
        self.status = default
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class BodySizeLimit:
    """Refuse (413) a request body over ``max_bytes``, declared or streamed.

    The body is read up to the limit before the app sees it and replayed, so an
    over-long chunked upload is cut off too; bodies are small (tens of KiB).
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = {"detail": f"request body larger than {self.max_bytes} bytes"}
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"detail": "invalid Content-Length"})
                    return
                if declared > self.max_bytes:
                    await _send_json(send, 413, too_big)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Count and time every request under its route template (``unmatched`` otherwise)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = _StatusOf(send, default=500)
        try:
            await self.app(scope, receive, response)
        finally:
            status = response.status
            route = scope.get("route")
            # Templates, never raw paths: label cardinality stays bounded.
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                label, scope.get("method", ""), status, time.perf_counter() - started
            )


def client_key(scope: Scope) -> str:
    """The address a request is counted under: the peer's IPv4 address, or its IPv6 /64.

    The peer is what the server saw, after uvicorn's ``--forwarded-allow-ips`` handling
    of ``X-Forwarded-For`` from a trusted proxy; the header itself is never read here.
    """
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)[:64]
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AddressBuckets:
    """A token bucket per client address for failed authentications; bounded memory.

    Each address may fail ``per_minute`` times in a burst, then once every
    ``60 / per_minute`` seconds. At most ``max_addresses`` are tracked; the least
    recently seen is forgotten first (it starts again with a full bucket).
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ):
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        elapsed = max(now - bucket.updated, 0.0)
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated = now
        self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again; ``None`` when it may try now."""
        with self._lock:
            bucket = self._refilled(key, self.clock())
            if bucket is None or bucket.tokens >= 1.0:
                return None
            return (1.0 - bucket.tokens) / self.rate_per_s

    def charge(self, key: str) -> None:
        """Count one failed authentication from ``key``."""
        with self._lock:
            now = self.clock()
            bucket = self._refilled(key, now)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.capacity, now)
                while len(self._buckets) > self.max_addresses:
                    self._buckets.popitem(last=False)
            bucket.tokens = max(bucket.tokens - 1.0, 0.0)


class UnauthenticatedLimit:
    """Per-address limit on failed authentications under ``prefixes``; 429 once spent.

    Every 401 answered under ``prefixes`` costs the client's address one token of
    its :class:`AddressBuckets` bucket; while the bucket is empty, requests from that
    address get a 429 with ``Retry-After`` before their token is even looked at. A
    request that authenticates costs nothing here (the per-principal limit applies).
    It also names the client address for the audit log (:data:`client_address`).

    :param on_limited: called for each 429, e.g. to write a (sampled) audit line.
    """

    def __init__(
        self,
        app: ASGIApp,
        buckets: AddressBuckets,
        prefixes: tuple[str, ...],
        on_limited: Callable[[], None] | None = None,
    ):
        self.app = app
        self.buckets = buckets
        self.prefixes = prefixes
        self.on_limited = on_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        reset = client_address.set(key)
        try:
            if not scope.get("path", "").startswith(self.prefixes):
                await self.app(scope, receive, send)
                return
            await self._limited(key, scope, receive, send)
        finally:
            client_address.reset(reset)

    async def _limited(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        wait = self.buckets.retry_after(key)
        if wait is not None:
            await self._refuse(send, wait)
            return
        response = _StatusOf(send, default=0)
        try:
            await self.app(scope, receive, response)
        finally:
            if response.status == 401:
                self.buckets.charge(key)

    async def _refuse(self, send: Send, wait_s: float) -> None:
        try:
            if self.on_limited is not None:
                self.on_limited()
        except AuditError as exc:
            # Fail closed as every other request does when its refusal cannot be logged.
            logger.error("audit log unavailable: %s", exc)
            await _send_json(send, 503, {"detail": "the audit log is unavailable"})
            return
        retry = str(max(1, math.ceil(wait_s)))
        await _send_json(
            send,
            429,
            {"detail": "too many failed authentications from this address"},
            {"Retry-After": retry},
        )
