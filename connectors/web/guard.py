"""SSRF guard: the crawler only talks to hosts whose every address is public.

A crawl follows links and redirects that a web page chooses, so without a
guard a page could steer Trove at ``http://169.254.169.254/`` (cloud metadata),
``localhost`` admin ports or intranet hosts, and the index would then serve
what it read there. Every request the connector makes — pages, robots.txt,
sitemaps and each redirect hop — first passes :meth:`AddressGuard.check`:
the host is resolved and refused if *any* address is not globally routable
(private, loopback, link-local, shared, reserved, multicast, unspecified, or
IPv4-mapped versions of those), as Onyx's strict ``protected_url_check`` does.

``allow_private_addresses: true`` turns the guard off (an intranet crawl, or
tests on 127.0.0.1). Known limit: the address is checked at resolution time
and httpx resolves again when it connects, so a DNS server that answers
differently within seconds (DNS rebinding) is not stopped; deploy the crawler
behind an egress firewall when that matters.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from connectors.errors import ConnectorError
from connectors.web.urls import host_of

Resolver = Callable[..., list[tuple[Any, ...]]]


class BlockedAddress(ConnectorError):
    """The host resolves to an address the guard does not allow."""


class HostUnresolvable(ConnectorError):
    """The host name does not resolve (DNS failure): treated as unreachable."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class AddressGuard:
    """Checks URLs before they are requested; results are cached per host for the run."""

    def __init__(self, allow_private: bool = False, resolve: Resolver = socket.getaddrinfo) -> None:
        self.allow_private = allow_private
        self._resolve = resolve
        self._verdicts: dict[str, str | None] = {}  # host -> refusal reason, None when allowed

    def check(self, url: str) -> None:
        """Raise :class:`BlockedAddress` (or :class:`HostUnresolvable`) unless ``url`` is safe."""
        if self.allow_private:
            return
        host = host_of(url)
        if host not in self._verdicts:
            self._verdicts[host] = self._judge(host)
        reason = self._verdicts[host]
        if reason is not None:
            if reason.startswith("unresolvable"):
                raise HostUnresolvable(f"{host}: {reason}")
            raise BlockedAddress(
                f"refusing {host}: {reason} (set `allow_private_addresses: true` "
                "to crawl intranet hosts)"
            )

    def _judge(self, host: str) -> str | None:
        if not host:
            return "no host"
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                infos = self._resolve(host, None, 0, socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                return f"unresolvable ({type(exc).__name__})"
            addresses = sorted({str(info[4][0]) for info in infos})
            if not addresses:
                return "unresolvable (no addresses)"
        for address in addresses:
            if not is_public(address):
                return f"it resolves to the non-public address {address}"
        return None
