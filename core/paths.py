"""Paths against globs: the one matcher that source selection and ACL rules both use.

A path is matched as written, and as the place it names (:func:`canonical_path`),
case-sensitively or not (:class:`Reading`). Selection (``include``/``exclude``)
and ACL rules hold a path to every reading they use, so writing a path
differently (``hr//x``, ``hr/./x``, another Unicode normal form, ``HR/``) can
only narrow who reads it or what is selected, never widen it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from wcmatch import glob as wglob

_GLOB_FLAGS = wglob.GLOBSTAR | wglob.NEGATE | wglob.BRACE


@lru_cache(maxsize=4096)
def _compiled(pattern: str, flags: int, canonical: bool) -> wglob.WcMatcher[str]:
    return wglob.compile(_nfc(pattern) if canonical else pattern, flags=flags)


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def matches(relative_path: str, patterns: Sequence[str]) -> bool:
    """Whether any glob matches the path exactly as written (``**`` any depth, ``{a,b}``)."""
    return any(_compiled(p, _GLOB_FLAGS, False).match(relative_path) for p in patterns)


def canonical_path(path: str) -> str:
    """The place a path names: NFC, no empty or ``.`` segments, a ``..`` takes its parent.

    A leading or trailing ``/`` is kept (URL paths and S3 "folders" are told apart
    by them). ``handbook/../hr/x`` and ``hr//./x`` both become ``hr/x``.
    """
    segments: list[str] = []
    for segment in _nfc(path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    joined = "/".join(segments)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and joined else ""
    return f"{lead}{joined}{trail}"


@dataclass(frozen=True)
class Reading:
    """One way of reading a path against a glob.

    A path is read exactly as written, and as the place it names
    (:func:`canonical_path`, patterns in NFC too), case-sensitively or not.
    """

    canonical: bool
    ignore_case: bool
    # `*` and `**` match segments that start with a dot (`hr/**` covers `hr/.x`).
    dotglob: bool = False

    def form(self, path: str) -> str:
        return canonical_path(path) if self.canonical else path

    def match(self, form: str, patterns: Sequence[str]) -> bool:
        flags = _GLOB_FLAGS | (wglob.IGNORECASE if self.ignore_case else 0)
        flags |= wglob.DOTGLOB if self.dotglob else 0
        return any(_compiled(p, flags, self.canonical).match(form) for p in patterns)


EXACT = Reading(canonical=False, ignore_case=False)
CANONICAL = Reading(canonical=True, ignore_case=False)
CANONICAL_ANY_CASE = Reading(canonical=True, ignore_case=True)
# Glob syntax leaves dot-segments out of `*` and `**`, while a person writing
# `hr/**` or `exclude: internal/**` means everything under it: these readings let
# the wildcards match them too. Both readings count, so a dot-segment gets the
# intersection of both ACLs and is excluded if either reading excludes it.
EXACT_DOTS = Reading(canonical=False, ignore_case=False, dotglob=True)
CANONICAL_ANY_CASE_DOTS = Reading(canonical=True, ignore_case=True, dotglob=True)
# ACL rules use all of them; `include` uses the case-sensitive, dot-skipping ones
# (the other readings would only add documents), `exclude` all (they only drop more).
RULE_READINGS = (EXACT, CANONICAL, CANONICAL_ANY_CASE, EXACT_DOTS, CANONICAL_ANY_CASE_DOTS)
INCLUDE_READINGS = (EXACT, CANONICAL)
# Sources whose paths are already the server's own spelling (URL readings, Graph paths).
EXACT_ONLY = (EXACT, EXACT_DOTS)


def included(paths: Iterable[str], include: Sequence[str], readings: Sequence[Reading]) -> bool:
    """Every path matches ``include`` under each case-sensitive reading among ``readings``
    (ignoring case would only add documents)."""
    return all(
        r.match(r.form(p), include) for p in paths for r in readings if r in INCLUDE_READINGS
    )


def excluded(paths: Iterable[str], exclude: Sequence[str], readings: Sequence[Reading]) -> bool:
    """Some path matches ``exclude`` under one of ``readings``."""
    return any(r.match(r.form(p), exclude) for p in paths for r in readings)


def selected(
    paths: Iterable[str],
    include: Sequence[str],
    exclude: Sequence[str],
    readings: Sequence[Reading] = RULE_READINGS,
) -> bool:
    """Every path is included under every reading and excluded under none."""
    paths = tuple(paths)
    return included(paths, include, readings) and not excluded(paths, exclude, readings)
