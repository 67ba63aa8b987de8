"""URL normalisation: one spelling per page, so ids, rules, dedupe and the cursor agree.

``normalise`` applies RFC 3986 §6.2.2 and §6.2.3 and a little of the WHATWG URL
standard (what browsers, and so the links on a page, mean):

* scheme and host are lower-cased; user-info, fragments and default ports are
  dropped; an empty path becomes ``/``;
* the host becomes exactly what the HTTP client connects to: an internationalised
  name is encoded with IDNA 2008 (as httpx does — ``faß.example`` is
  ``xn--fa-hia.example``, not the IDNA 2003 ``fass.example``), an IPv4 address
  written as ``127.1``, ``0x7f.1`` or ``2130706433`` becomes ``127.0.0.1``, and a
  name that is neither a valid DNS name nor an IP address makes the URL ``None``;
* percent-encodings get upper-case hex digits, encoded unreserved characters
  (``ALPHA / DIGIT / - . _ ~``) are decoded — ``/%69nternal`` *is* ``/internal`` —
  and characters that must be encoded are; ``%2F`` and other encoded reserved
  characters stay encoded (they may mean something else to the server: see
  :mod:`connectors.web.scope` for how rules treat them);
* ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4), also when the dots
  were percent-encoded (``%2e%2e``), and a backslash in the path is a ``/`` (as
  browsers read it).

The query is kept in its order (parameter order can matter to a server).
Anything but ``http``/``https`` (``mailto:``, ``javascript:``, ``ftp:``, data
URIs) normalises to ``None``.
"""

from __future__ import annotations

import ipaddress
import re
import string
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import httpx
import idna

_DEFAULT_PORTS = {"http": 80, "https": 443}
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_SUB_DELIMS = "!$&'()*+,;="
_PATH_CHARS = frozenset(UNRESERVED | set(_SUB_DELIMS) | set(":@/"))
_QUERY_CHARS = frozenset(_PATH_CHARS | {"?"})
_HEX = frozenset(string.hexdigits)
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")


def normalise_percent_encoding(text: str, allowed: frozenset[str] = _PATH_CHARS) -> str:
    """``text`` with RFC 3986 §6.2.2.1/§6.2.2.2 applied: hex upper-cased, unreserved decoded,
    and every character outside ``allowed`` (a stray ``%`` included) percent-encoded as UTF-8."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%" and len(text) >= i + 3 and set(text[i + 1 : i + 3]) <= _HEX:
            decoded = chr(int(text[i + 1 : i + 3], 16))
            out.append(decoded if decoded in UNRESERVED else "%" + text[i + 1 : i + 3].upper())
            i += 3
            continue
        out.append(char if char in allowed else quote(char, safe=""))
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, so ``/a/./b/../c`` and ``/a/c`` are the same page."""
    out: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith(("./", "/./")):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if out:
                out.pop()
        elif rest == "/..":
            rest = "/"
            if out:
                out.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            start = 1 if rest.startswith("/") else 0
            end = rest.find("/", start)
            end = len(rest) if end < 0 else end
            out.append(rest[:end])
            rest = rest[end:]
    return "".join(out)


def _ipv4_part(label: str) -> int | None:
    """One part of a WHATWG IPv4 address: decimal, ``0x`` hex or ``0``-prefixed octal."""
    try:
        if label[:2].lower() == "0x":
            return int(label[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label[1:], 8)
        return int(label, 10)
    except ValueError:
        return None


def _whatwg_ipv4(host: str) -> str | None:
    """``127.1``, ``0x7f.0.0.1``, ``2130706433`` → ``127.0.0.1``; ``None`` if not a valid one."""
    parts = [_ipv4_part(label) for label in host.split(".")]
    if len(parts) > 4 or any(p is None for p in parts):
        return None
    numbers = [p for p in parts if p is not None]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1] + sum(n * 256 ** (3 - i) for i, n in enumerate(numbers[:-1]))
    return str(ipaddress.IPv4Address(value))


def canonical_host(raw: str) -> str | None:
    """The host the HTTP client connects to, in one spelling; ``None`` if it has none.

    Lower-case ASCII; IDNA 2008 (``xn--``) for internationalised names, like httpx;
    a dotted-quad for any IPv4 spelling; an IPv6 address in its compressed form
    (without brackets). Zone ids, percent signs and other odd characters are refused.
    """
    host = raw.strip().strip("[]") if raw.startswith("[") else raw.strip()
    if ":" in host:
        if "%" in host:
            return None  # an IPv6 zone id names an interface of this machine
        try:
            return str(ipaddress.IPv6Address(host))  # a "%zone" makes this fail: refused
        except ValueError:
            return None
    try:
        host = unquote(host, errors="strict").rstrip(".")
    except UnicodeDecodeError:
        return None
    if not host or len(host) > 253:
        return None
    if not host.isascii():
        try:
            host = idna.encode(host.lower()).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None  # not a name IDNA 2008 can encode (httpx refuses it too)
    host = host.lower()
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        return _whatwg_ipv4(host)  # "ends in a number": an IPv4 address or nothing
    if not all(_LABEL.match(label) and len(label) <= 63 for label in labels):
        return None
    return host


def _raw_host(netloc: str) -> str:
    """The host part of a netloc as written: no user-info, no port, brackets kept."""
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0]


def _split_off_query(url: str) -> tuple[str, str]:
    """``url`` before its ``?``/``#`` and the rest (backslashes count only in the first part)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut], url[cut:]


def normalise(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of ``url`` (resolved against ``base``), or ``None`` if not http(s)."""
    url = url.strip()
    if not url:
        return None
    head, tail = _split_off_query(url)
    url = head.replace("\\", "/") + tail  # WHATWG: "\" is "/" in http(s) URLs
    try:
        joined = urljoin(base, url) if base else url
        parts = urlsplit(joined)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        port = parts.port
    except ValueError:
        return None  # a bad port or IPv6 literal
    host = canonical_host(_raw_host(parts.netloc))
    if host is None:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = remove_dot_segments(normalise_percent_encoding(parts.path or "/")) or "/"
    query = normalise_percent_encoding(parts.query, _QUERY_CHARS)
    result = urlunsplit((scheme, netloc, path, query, ""))
    if connect_host(result) != host:
        return None  # the HTTP client would read this host differently: refuse it
    return result


def connect_host(url: str) -> str | None:
    """The host httpx connects to for ``url`` (its ``raw_host``), or ``None`` if it refuses it."""
    try:
        return httpx.URL(url).raw_host.decode("ascii") or None
    except (httpx.InvalidURL, UnicodeError, TypeError):
        return None


def host_of(url: str) -> str:
    """The lower-case host name (no port) of an absolute URL; ``""`` if there is none."""
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def origin_of(url: str) -> str:
    """``scheme://host[:port]``: the unit robots.txt applies to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def path_of(url: str) -> str:
    """The URL's path (``/`` for the root): what ACL rules and include/exclude globs match."""
    return urlsplit(url).path or "/"


def extension_of(url: str) -> str:
    """The last path segment's extension, lower-case, without the dot (``""`` if none)."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""
