"""Generations: ``manifest-<generation>.json`` files and the ``CURRENT`` pointer.

A commit writes every new file, fsyncs it, writes the new manifest, then
atomically replaces ``CURRENT`` (temp file + fsync + ``os.replace`` + fsync of
the directory). Whatever instant a writer dies at, ``CURRENT`` names a
complete manifest whose files were all durable before it was named.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retrieval.index.base import IndexCorruptError, IndexGeneration, IndexNotFoundError
from retrieval.index.embedded.files import read_json, replace_atomically

MANIFEST_FORMAT = 1
CURRENT = "CURRENT"


@dataclass(frozen=True)
class SegmentEntry:
    id: str
    rows: int
    live: int
    deleted: str | None = None  # side file (bool .npy) of tombstoned rows; None: none deleted
    acl: str | None = None  # side file prefix of replaced ACLs; None: the segment's own


@dataclass(frozen=True)
class Manifest:
    generation: int
    dimensions: int  # 0 until the first vectors arrive
    analyzer: str
    segments: tuple[SegmentEntry, ...] = ()
    # Random, made with the index (``""`` in an index written before ids existed:
    # it gets one at its next commit), and random per commit: see IndexGeneration.
    index_id: str = ""
    commit: str = ""

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "generation": self.generation,
            "index_id": self.index_id,
            "commit": self.commit,
            "dimensions": self.dimensions,
            "analyzer": self.analyzer,
            "segments": [asdict(s) for s in self.segments],
        }

    def index_generation(self) -> IndexGeneration | None:
        if not (self.index_id and self.commit):
            return None
        return IndexGeneration(self.index_id, self.generation, self.commit)

    @classmethod
    def from_json(cls, data: dict, path: Path) -> Manifest:
        try:
            if data["format"] != MANIFEST_FORMAT:
                raise IndexCorruptError(f"{path}: unsupported manifest format {data['format']!r}")
            return cls(
                generation=int(data["generation"]),
                dimensions=int(data["dimensions"]),
                analyzer=str(data["analyzer"]),
                segments=tuple(SegmentEntry(**s) for s in data["segments"]),
                index_id=str(data.get("index_id") or ""),
                commit=str(data.get("commit") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{path}: malformed manifest: {exc}") from exc


def manifest_name(generation: int) -> str:
    return f"manifest-{generation:010d}.json"


def read_current(root: Path) -> int:
    """The committed generation; :class:`IndexNotFoundError` when there is none."""
    path = root / CURRENT
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise IndexNotFoundError(
            f"no index at {root} (no {CURRENT} file); run `trove ingest` to build one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path} is unreadable: {exc}") from exc
    if not text.isdigit():
        raise IndexCorruptError(f"{path} should hold a generation number, found {text[:40]!r}")
    return int(text)


def read_manifest(root: Path, generation: int) -> Manifest:
    path = root / manifest_name(generation)
    manifest = Manifest.from_json(read_json(path), path)
    if manifest.generation != generation:
        raise IndexCorruptError(f"{path} claims generation {manifest.generation}")
    return manifest


def write_manifest(root: Path, manifest: Manifest) -> None:
    data = json.dumps(manifest.to_json(), indent=1).encode()
    replace_atomically(root / manifest_name(manifest.generation), data)


def write_current(root: Path, generation: int) -> None:
    """The commit point."""
    replace_atomically(root / CURRENT, f"{generation}\n".encode())
