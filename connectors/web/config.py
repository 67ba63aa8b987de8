"""``type: web`` settings. Pages are public unless the source's ACL says otherwise."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from connectors.web.urls import canonical_host, normalise
from core.config import StrictModel


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    if normalise(value) is None:
        raise ValueError(f"not a URL the crawler can fetch (its host?): {value!r}")
    return value.strip()


class WebConfig(StrictModel):
    start_urls: list[str] = Field(min_length=1)
    sitemaps: list[str] = Field(default_factory=list)  # also read from robots.txt
    # Hosts links may lead to, besides the start URLs' hosts (always allowed).
    allowed_hosts: list[str] = Field(default_factory=list)
    max_pages: int = Field(default=10_000, ge=1)
    max_depth: int = Field(default=10, ge=0)
    user_agent: str = "TroveBot/0.1 (+https://github.com/trove)"
    request_delay_s: float = Field(default=0.0, ge=0)
    # Refuse private, loopback and link-local addresses (SSRF guard) unless allowed.
    allow_private_addresses: bool = False
    timeout_s: float = Field(default=30.0, gt=0)  # per request (connect, read, write, pool)
    batch_size: int = Field(default=50, ge=1, le=10_000)  # documents per ChangeBatch
    # True: every page is public (native ACL), though an `acl` rule that matches the
    # URL path still replaces it. False: pages carry no native ACL and the source's
    # `acl` rules and `default` decide (an intranet).
    public: bool = True
    # True: the server treats /Docs/A and /docs/a as one page (IIS, Windows shares), so
    # paths are matched lower-cased — write `acl` rules and globs in lower case.
    case_insensitive_paths: bool = False

    @field_validator("start_urls", "sitemaps")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        return [_http_url(v) for v in values]

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not v.strip() or "/" in v or ":" in v]
        if bad:
            raise ValueError(f"allowed_hosts takes host names only (no scheme or port): {bad}")
        # The spelling the client connects to: `faß.example` is `xn--fa-hia.example`.
        hosts = [canonical_host(v) for v in values]
        unusable = [v for v, h in zip(values, hosts, strict=True) if h is None]
        if unusable:
            raise ValueError(f"allowed_hosts: not valid host names (IDNA 2008): {unusable}")
        return [h for h in hosts if h]
