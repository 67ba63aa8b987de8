"""What a connector is told about its source besides its own settings block.

A connector gets a :class:`SourceScope` (which documents, how big, how hard to
retry, who may read what) and its type's block (``ConfluenceConfig``,
``SharePointConfig``, ``S3Config``, ``WebConfig``; none for a filesystem), never
the whole source configuration: the pipeline's settings (OCR, PII, chunking,
schedules) are not a connector's business. ``pipelines.config.SourceConfig.scope``
builds it from ``trove.yaml``; tests and tools can build one directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.acl_policy import AclPolicy
from core.paths import RULE_READINGS, Reading, selected
from core.retry import RetryPolicy

ALL_DOCUMENTS = ("**/*",)


@dataclass(frozen=True)
class SourceScope:
    """One source as its connector sees it.

    :param name: the source's name, the prefix of every document id.
    :param max_bytes: the largest document to read (``limits.max_bytes``); bigger
        ones are failures, and the web connector stops reading a body there.
    :param include: globs a document's path must match (``**/*``: everything).
    :param exclude: globs that drop a document whose path matches.
    :param retry: how hard to retry throttled or failing requests.
    :param acl: the source's ACL rules; the pipeline applies them, and the web
        connector also reads them to choose among the paths a server may read.
    :param root: a filesystem source's folder.
    :param follow_symlinks: a filesystem source follows links that stay in ``root``.
    """

    name: str
    max_bytes: int
    include: tuple[str, ...] = ALL_DOCUMENTS
    exclude: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    acl: AclPolicy = field(default_factory=lambda: AclPolicy(rules=(), default=None))
    root: Path | None = None
    follow_symlinks: bool = False

    def selects(self, paths: Sequence[str], readings: Sequence[Reading] = RULE_READINGS) -> bool:
        """Every path is included and none excluded, under each of ``readings``
        (:func:`core.paths.selected`; by default as written and as the place it names)."""
        return selected(paths, self.include, self.exclude, readings)
