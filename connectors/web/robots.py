"""robots.txt per RFC 9309, parsed with protego, fetched once per origin per run.

What each answer means (RFC 9309 §2.3.1):

* 2xx: the rules apply (the first 500 KiB are parsed, as the RFC's minimum);
* 4xx (401 and 403 included): "unavailable" — everything may be crawled;
* 5xx, 429 past the retry budget, or an unreachable host: "unreachable" —
  **nothing** on that origin may be crawled. The crawl is then incomplete, so
  the connector does not let the pipeline delete that origin's pages;
* redirects are followed up to five hops (each hop passes the SSRF guard);
  more than five counts as unavailable. A redirect to a host the crawl may not
  visit is not followed and counts as unreachable (nothing crawled, reported),
  so that rules we could not read never let the crawl in.

``Sitemap:`` lines are collected for the crawler; ``Crawl-delay`` for our user
agent is honoured (capped) between requests to the origin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from protego import Protego

from connectors.errors import ConnectorError
from connectors.http import SourceAuthError, SourceUnavailable
from connectors.web.fetch import Fetcher, FetchError, TooManyRedirects
from connectors.web.guard import BlockedAddress
from connectors.web.urls import normalise, origin_of

log = logging.getLogger(__name__)

MAX_ROBOTS_BYTES = 500 * 1024
MAX_CRAWL_DELAY_S = 60.0


@dataclass(frozen=True)
class RobotsRules:
    """What one origin's robots.txt allows; ``problem`` is set when it could not be read."""

    origin: str
    parser: Protego | None = None  # None: no rules (4xx) or nothing allowed (``disallow_all``)
    disallow_all: bool = False
    sitemaps: tuple[str, ...] = field(default_factory=tuple)
    problem: str | None = None

    def allows(self, url: str, user_agent: str) -> bool:
        if self.disallow_all:
            return False
        return self.parser is None or self.parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float:
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(user_agent)
        return min(float(delay), MAX_CRAWL_DELAY_S) if delay else 0.0


class RobotsCache:
    """robots.txt rules per origin, fetched on first use and kept for the run."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._rules: dict[str, RobotsRules] = {}

    def rules_for(self, url: str) -> RobotsRules:
        origin = origin_of(url)
        if origin not in self._rules:
            self._rules[origin] = self._load(origin)
        return self._rules[origin]

    def cached(self, url: str) -> RobotsRules | None:
        """The rules already loaded for ``url``'s origin, without fetching."""
        return self._rules.get(origin_of(url))

    def _load(self, origin: str) -> RobotsRules:
        robots_url = f"{origin}/robots.txt"
        try:
            fetched = self.fetcher.get(robots_url)
        except SourceAuthError:
            return RobotsRules(origin)  # 401/403 are 4xx: unavailable, all allowed
        except SourceUnavailable as exc:
            return self._unreachable(origin, f"robots.txt unreachable: {exc}")
        except BlockedAddress:
            raise
        except TooManyRedirects:
            return RobotsRules(origin)  # RFC 9309: more than 5 redirects = unavailable
        except FetchError as exc:
            return self._unreachable(origin, f"robots.txt unreadable: {exc}")
        except ConnectorError as exc:  # DNS failure and the like
            return self._unreachable(origin, f"robots.txt unreachable: {exc}")
        status = fetched.status
        if fetched.refused_redirect is not None and normalise(fetched.refused_redirect):
            return self._unreachable(
                origin,
                f"robots.txt redirects to {fetched.refused_redirect}, which is not an allowed "
                "host (add it to `allowed_hosts` to read it)",
            )
        if 200 <= status < 300:
            text = fetched.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            parser = Protego.parse(text)
            return RobotsRules(origin, parser=parser, sitemaps=tuple(parser.sitemaps))
        if 300 <= status < 500:
            return RobotsRules(origin)  # unavailable (or a refused redirect): all allowed
        return self._unreachable(origin, f"robots.txt answered {status}")

    @staticmethod
    def _unreachable(origin: str, problem: str) -> RobotsRules:
        log.warning("%s: %s; crawling nothing there this run", origin, problem)
        return RobotsRules(origin, disallow_all=True, problem=problem)
