"""SSRF guard: the crawler only connects to addresses it checked, and only to public ones.

A crawl follows links and redirects that a web page chooses, so without a
guard a page could steer Trove at ``http://169.254.169.254/`` (cloud metadata),
``localhost`` admin ports or intranet hosts, and the index would then serve
what it read there. Three things make the guard hold:

* **The host checked is the host connected to.** The name is taken from the URL
  exactly as httpx reads it (``raw_host``: IDNA 2008, so ``faß.example`` is
  ``xn--fa-hia.example``; Python's resolver alone would look up the IDNA 2003
  ``fass.example``, a different host). It is resolved once per run, and
  *every* address must be public.
* **The address checked is the address connected to.** :class:`PinnedBackend`
  is the httpx connection layer: it opens the TCP connection to one of the
  checked addresses and never resolves the name again, so a DNS answer that
  changes between check and connect (DNS rebinding) changes nothing. TLS still
  verifies the certificate for, and sends SNI and ``Host`` with, the host name.
* **What counts as public** (:func:`is_public`): IPv4 that is globally routable
  (not private, loopback, link-local, shared 100.64/10, benchmark 198.18/15,
  multicast, reserved, unspecified, or the IETF/6to4-relay blocks); IPv6 only
  in global unicast ``2000::/3`` and not documentation, Teredo or other special
  blocks. IPv6 forms that carry an IPv4 address — IPv4-mapped ``::ffff:0:0/96``,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16`` — are judged by that IPv4 address;
  IPv4-compatible ``::/96``, IPv4-translated ``::ffff:0:0:0/96``, local NAT64
  ``64:ff9b:1::/48`` and Teredo ``2001::/32`` are refused outright.

``allow_private_addresses: true`` turns the guard off (an intranet crawl, or
tests on 127.0.0.1): names are then resolved by the operating system as usual.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from connectors.errors import ConnectorError
from connectors.web.urls import connect_host

Resolver = Callable[..., list[tuple[Any, ...]]]

_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV6_REFUSED = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # IPv4-compatible (deprecated), with :: and ::1
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64: the embedding is the network's own
        "2001::/32",  # Teredo: the client address is obfuscated
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fec0::/10",  # site-local (deprecated, still routed on some networks)
    )
)
_IPV4_REFUSED = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "198.18.0.0/15",  # benchmarking
    )
)


class BlockedAddress(ConnectorError):
    """The host resolves to an address the guard does not allow."""


class HostUnresolvable(ConnectorError):
    """The host name does not resolve (DNS failure): treated as unreachable."""


def _is_public_v4(ip: ipaddress.IPv4Address) -> bool:
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    special = special or ip.is_reserved or ip.is_unspecified
    return ip.is_global and not special and not any(ip in net for net in _IPV4_REFUSED)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address leads to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(address: str) -> bool:
    """Whether connecting to ``address`` can only reach the public Internet."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone id only narrows the scope
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_v4(ip)
    if any(ip in net for net in _IPV6_REFUSED):
        return False
    inner = embedded_ipv4(ip)
    if inner is not None:
        return _is_public_v4(inner)
    return ip in _IPV6_GLOBAL_UNICAST and ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class _Verdict:
    addresses: tuple[str, ...] = ()
    refusal: str | None = None  # why the host is refused; None when it is allowed
    unresolvable: bool = False


class AddressGuard:
    """Resolves and checks hosts once per run; the addresses it allowed are the only ones used.

    :param allow_private: do not check (and do not pin) at all.
    :param resolve: ``socket.getaddrinfo``-like; tests pass (or set) a stub.
    :param allowed: the test an address must pass (:func:`is_public`; tests may widen it).
    """

    def __init__(
        self,
        allow_private: bool = False,
        resolve: Resolver = socket.getaddrinfo,
        allowed: Callable[[str], bool] = is_public,
    ) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.allowed = allowed
        self._verdicts: dict[str, _Verdict] = {}  # host as httpx connects to it -> verdict

    def forget(self) -> None:
        """Drop what was resolved (a new run); connections already open stay where they are."""
        self._verdicts.clear()

    def check(self, url: str) -> None:
        """Raise :class:`BlockedAddress` (or :class:`HostUnresolvable`) unless ``url`` is safe."""
        if self.allow_private:
            return
        host = connect_host(url)
        if host is None:
            raise BlockedAddress(f"refusing {url!r}: the HTTP client cannot read its host")
        self.addresses(host)

    def addresses(self, host: str) -> tuple[str, ...]:
        """The checked addresses to connect to for ``host`` (as httpx passes it to the network).

        With ``allow_private`` the host itself comes back: the operating system resolves it.
        """
        if self.allow_private:
            return (host,)
        if host not in self._verdicts:
            self._verdicts[host] = self._judge(host)
        verdict = self._verdicts[host]
        if verdict.unresolvable:
            raise HostUnresolvable(f"{host}: {verdict.refusal}")
        if verdict.refusal is not None:
            raise BlockedAddress(
                f"refusing {host}: {verdict.refusal} (set `allow_private_addresses: true` "
                "to crawl intranet hosts)"
            )
        return verdict.addresses

    def _judge(self, host: str) -> _Verdict:
        if not host or not host.isascii():
            return _Verdict(refusal="no usable host name")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: Iterable[str] = [str(literal)]
        else:
            try:
                infos = self.resolve(host, None, 0, socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                return _Verdict(refusal=f"unresolvable ({type(exc).__name__})", unresolvable=True)
            addresses = [str(info[4][0]) for info in infos]
        unique = tuple(dict.fromkeys(addresses))
        if not unique:
            return _Verdict(refusal="unresolvable (no addresses)", unresolvable=True)
        for address in unique:
            try:
                allowed = self.allowed(address)
            except ValueError:
                allowed = False
            if not allowed:
                return _Verdict(refusal=f"it resolves to the non-public address {address}")
        return _Verdict(addresses=unique)


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's network layer, connecting to the guard's checked addresses, never re-resolving."""

    def __init__(self, guard: AddressGuard, inner: httpcore.NetworkBackend | None = None) -> None:
        self.guard = guard
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.guard.addresses(host):
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # try the next checked address, as a resolver-driven connect would
        raise failure or httpcore.ConnectError(f"no address to connect to for {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("the crawler does not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport (TLS, HTTP/1.1, keep-alive) over a :class:`PinnedBackend`.

    No proxy is used, not even one named by ``HTTP(S)_PROXY``: a proxy would
    resolve the host again, out of the guard's sight.
    """

    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(guard),
        )
