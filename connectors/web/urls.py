"""URL normalisation: one spelling per page, so ids, dedupe and the cursor agree.

``normalise`` lower-cases scheme and host, drops default ports, fragments and
user-info, removes ``.``/``..`` segments, gives an empty path ``/`` and
percent-encodes characters that must be encoded. The query is kept as written
(parameter order can matter to a server). Anything but ``http``/``https``
(``mailto:``, ``javascript:``, ``ftp:``, data URIs) normalises to ``None``.
"""

from __future__ import annotations

from urllib.parse import quote, urljoin, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, so ``/a/./b/../c`` and ``/a/c`` are the same page."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = path.endswith(("/.", "/..")) and (not out or out[-1] != "")
    result = "/" + "/".join(out)
    return result + "/" if trailing else result


def normalise(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of ``url`` (resolved against ``base``), or ``None`` if not http(s)."""
    url = url.strip()
    if not url:
        return None
    try:
        joined = urljoin(base, url) if base else url
        parts = urlsplit(joined)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        host = parts.hostname.lower().rstrip(".")
        port = parts.port
    except ValueError:
        return None  # a bad port or IPv6 literal
    if not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = _remove_dot_segments(quote(parts.path or "/", safe=_PATH_SAFE))
    query = quote(parts.query, safe=_QUERY_SAFE)
    return urlunsplit((scheme, netloc, path or "/", query, ""))


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
