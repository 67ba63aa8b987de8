"""Shared steps for the per-source end-to-end tests: a trove.yaml around one source block,
`trove ingest`'s own path, and searches as principals through the group directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.acl import Principal
from retrieval.directory import GroupDirectory
from retrieval.embedding.factory import get_embedder
from retrieval.index.factory import open_index
from retrieval.search import Searcher
from trove.config import Settings, load_settings


def write_config(tmp_path: Path, source: dict[str, Any]) -> Path:
    config = {
        "index": {"path": str(tmp_path / "index")},
        "state": {"path": str(tmp_path / "state")},
        "sources": [source],
    }
    path = tmp_path / "trove.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class SearchAs:
    """Searches as a principal, the way the CLI and the API do (identity expanded first)."""

    def __init__(self, config_path: Path) -> None:
        self.settings: Settings = load_settings(config_path)
        cfg = self.settings.embedding
        self.embedder = get_embedder(cfg.model, device=cfg.device, batch_size=cfg.batch_size)
        self.directory = GroupDirectory.in_state_dir(self.settings.state.path)

    def docs(self, query: str, user: str, groups: tuple[str, ...] = (), k: int = 10) -> list[str]:
        """Document ids of the passages ``user`` gets, best first (index reopened: always fresh)."""
        index = open_index(self.settings.index)
        try:
            searcher = Searcher.from_config(
                index, self.embedder, self.settings.retrieval, identity=self.directory
            )
            passages = searcher.search(query, Principal.of(user, groups), k=k)
        finally:
            index.close()
        seen: list[str] = []
        for p in passages:
            if p.citation.doc_id not in seen:
                seen.append(p.citation.doc_id)
        return seen

    def readable_docs(self, user: str, groups: tuple[str, ...] = ()) -> set[str]:
        """Every document with at least one chunk ``user`` may read (checked chunk by chunk)."""
        index = open_index(self.settings.index)
        try:
            principal = self.directory.expand(Principal.of(user, groups))
            return {
                chunk_id.rsplit("#", 1)[0]
                for chunk_id, acl in index.all_acls().items()
                if acl is not None and acl.permits(principal)
            }
        finally:
            index.close()

    def close(self) -> None:
        self.directory.close()
