"""Which URL paths a web source crawls, and which path its ACL rules see: fail closed.

A URL is normalised (:func:`connectors.web.urls.normalise`) before anything is
matched, but servers do not all read a path the same way: many decode ``%2F``
to ``/`` (so ``/docs/..%2Finternal/x`` is ``/internal/x``), strip ``;param``
path parameters (Tomcat, Spring), turn ``\\`` into ``/`` and merge ``//``
(nginx, IIS), decode twice, or ignore case (IIS, Windows shares; the source's
``case_insensitive_paths: true``). So a path is matched under every such
reading (:func:`server_readings`), and:

* ``include``/``exclude``: the URL is crawled only if *every* reading is
  included and *no* reading is excluded;
* ``acl`` rules: each reading gets the ACL the pipeline would give it
  (:class:`~core.acl_policy.AclPolicy`, the same code). When they differ, the
  document's ``path`` is the reading whose ACL is the strictest — one that
  admits no one the others do not — so the pipeline applies that ACL. When no
  reading is stricter than all others (two rules for different groups), the URL
  is refused: it is not crawled, and the log says why.

With ``case_insensitive_paths`` every reading is lower-cased (and trailing dots
and spaces of segments dropped, as Windows does), so the rules and globs of
such a source must be written in lower case (checked when the source loads).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from connectors.scope import ALL_DOCUMENTS
from connectors.web.urls import remove_dot_segments
from core.acl import Acl
from core.acl_policy import AclPolicy
from core.paths import EXACT_ONLY, excluded, included

log = logging.getLogger(__name__)

_MAX_DECODE_ROUNDS = 4
_ENCODED_SLASH = re.compile(r"(%2[fF])")
_SLASH_RUN = re.compile(r"/{2,}")
_SEGMENT_TAIL = re.compile(r"[. ]+(?=/|$)")


def _decode(path: str, *, keep_slash: bool) -> str:
    """Percent-decode until nothing changes (a server may decode twice); ``%2F`` kept on ask."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if keep_slash:
            parts = _ENCODED_SLASH.split(path)
            decoded = "".join(p if _ENCODED_SLASH.fullmatch(p) else unquote(p) for p in parts)
        else:
            decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return path


def _strip_params(path: str) -> str:
    """``/a;jsessionid=1/b;v=2`` → ``/a/b``: path parameters as Tomcat and Spring drop them."""
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def _tidy(path: str) -> str:
    path = _SLASH_RUN.sub("/", path.replace("\\", "/"))
    return remove_dot_segments(path if path.startswith("/") else "/" + path) or "/"


def server_readings(path: str, *, case_insensitive: bool = False) -> tuple[str, ...]:
    """``path`` (normalised) as each plausible server reads it; the first is ``path`` itself
    (lower-cased when ``case_insensitive``)."""
    readings = [path]
    for keep_slash in (True, False):
        decoded = _decode(path, keep_slash=keep_slash)
        params_first = _decode(_strip_params(path), keep_slash=keep_slash)
        readings += [_tidy(p) for p in (decoded, _strip_params(decoded), params_first)]
    if case_insensitive:
        readings = [r.lower() for r in readings]
        readings += [_tidy(_SEGMENT_TAIL.sub("", r)) for r in readings]
    return tuple(dict.fromkeys(readings))


def at_least_as_strict(a: Acl, b: Acl) -> bool:
    """Whether everyone ``a`` admits is admitted by ``b`` too (a sufficient test: ``False``
    may also mean "cannot tell", which the caller treats as "no")."""
    if a == b or not a.grants_anyone:
        return True
    if b.tenant is not None and a.tenant != b.tenant:
        return False
    if not (b.deny_users <= a.deny_users and b.deny_groups <= a.deny_groups):
        return False
    if not set(b.layers) <= set(a.layers):
        return False
    if b.public:
        return True
    # Everyone `a` admits passes its allow list and each of its layers: one of them
    # inside `b`'s allow list is enough.
    gates = [] if a.public else [(a.allow_users, a.allow_groups)]
    gates += [(layer.users, layer.groups) for layer in a.layers]
    return any(users <= b.allow_users and groups <= b.allow_groups for users, groups in gates)


@dataclass(frozen=True)
class PathVerdict:
    """The path to report for a URL path (what the ACL rules will match), or why none is."""

    path: str | None
    acl: Acl | None = None
    reason: str = ""


class UrlRules:
    """A web source's globs and ACL rules, applied to URL paths under every server reading."""

    def __init__(
        self,
        *,
        include: Sequence[str],
        exclude: Sequence[str],
        policy: AclPolicy,
        native: Acl,
        case_insensitive: bool = False,
    ) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.policy = policy
        self.native = native
        self.case_insensitive = case_insensitive
        self._verdicts: dict[str, PathVerdict] = {}
        self._included: dict[str, bool] = {}
        self._reported: set[str] = set()

    def readings(self, path: str) -> tuple[str, ...]:
        return server_readings(path, case_insensitive=self.case_insensitive)

    def included(self, path: str) -> bool:
        if path not in self._included:
            # Each server reading is a spelling some server uses: matched as written.
            # `**/*` does not match the root `/`, so "everything" is taken as said.
            readings = self.readings(path)
            self._included[path] = (
                self.include == ALL_DOCUMENTS or included(readings, self.include, EXACT_ONLY)
            ) and not excluded(readings, self.exclude, EXACT_ONLY)
        return self._included[path]

    def verdict(self, path: str) -> PathVerdict:
        if path not in self._verdicts:
            self._verdicts[path] = self._judge(path)
        return self._verdicts[path]

    def admits(self, path: str) -> bool:
        """In scope and with an unambiguous (or strictest) ACL; a refusal is logged once."""
        if not self.included(path):
            return False
        verdict = self.verdict(path)
        if verdict.path is None and path not in self._reported:
            self._reported.add(path)
            log.warning("web: not crawling %s: %s", path, verdict.reason)
        return verdict.path is not None

    def _judge(self, path: str) -> PathVerdict:
        readings = self.readings(path)
        acls = [(r, self.policy.acl_for_path(r, self.native)) for r in readings]
        for reading, acl in acls:  # the first reading (the path itself) wins a tie
            if all(at_least_as_strict(acl, other) for _, other in acls):
                return PathVerdict(reading, acl)
        spelled = ", ".join(sorted({r for r, _ in acls}))
        return PathVerdict(
            None,
            reason=(
                f"servers may read it as any of {spelled}, which ACL rules give different "
                "permissions, none stricter than all others"
            ),
        )
