"""The 18F replication corpus for ``trove bench query``.

Embedding a million chunks with the real model would take hours on two cores
(docs/benchmarks.md#embedding-backends), so the benchmark corpus is made in two steps:

1. **Base chunks.** Every Markdown page of ``../shared/corpora/18f-handbook`` is
   parsed and chunked by Trove's own pipeline (``pipelines.parse.parse_file`` and
   ``pipelines.chunk.chunk_document`` with the model's tokenizer, the same
   200-token budget as ingestion), and the ~3k unique chunks are embedded once
   with the real all-MiniLM-L6-v2. Both are cached (``base.json`` + ``base.npy``).
2. **Replicas.** Replica ``r`` of a page is a new document whose chunks are the
   page's chunks with light perturbation: a few words dropped or swapped, a
   replica token (``rep<r>``, shared by all chunks of that replica, so the
   vocabulary does not grow with the corpus) and the vector plus small Gaussian
   noise, renormalised (cosine to the original ~0.95), so no two rows are equal.
   Each replica document gets a random, realistic ACL (see :func:`bench_acl`).

Queries are the handbook's own section titles and page titles (what a user
types), embedded at query time by the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.acl import Acl, Principal
from retrieval.index.base import ChunkRecord
from trove.bench.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDBOOK = REPO_ROOT.parent / "shared" / "corpora" / "18f-handbook"
GENERATOR_VERSION = 1
# Per-dimension noise; for 384 dimensions it gives cosine(replica, original) ~ 0.95.
VECTOR_NOISE = 0.017

# The principal of the headline numbers reads ~45% of the chunks; the selective one ~1%.
MAIN_PRINCIPAL = Principal.of("bench-user", ["all-staff", "contractors"], tenant="acme")
SELECTIVE_PRINCIPAL = Principal.of("auditor-7", ["auditors"], tenant="audit")


class CorpusUnavailableError(BenchError):
    """The 18F handbook is not beside the checkout (``../shared/corpora``)."""


@dataclass(frozen=True)
class BaseCorpus:
    chunks: list[BaseChunk]
    vectors: np.ndarray  # (len(chunks), 384) float32, unit rows
    pages: int
    skipped: list[str]  # pages the parser refused (e.g. front matter only), with the reason


@dataclass(frozen=True)
class BaseChunk:
    doc: str  # relative path of the page
    title: str
    ord: int
    text: str
    section: tuple[str, ...]
    char_start: int
    char_end: int


def handbook_dir() -> Path:
    if not HANDBOOK.is_dir():
        raise CorpusUnavailableError(
            f"the 18F handbook corpus is not at {HANDBOOK} (it sits beside the dev checkout "
            "only); the query benchmark needs it"
        )
    return HANDBOOK


def _corpus_key(root: Path) -> str:
    h = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
    for path in sorted(root.rglob("*.md")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def base_corpus(cache_dir: Path, max_chunks: int | None = None) -> BaseCorpus:
    """The handbook's chunks and their real MiniLM vectors, computed once per cache dir.

    :param max_chunks: stop after the page that reaches this many chunks (a small
        benchmark then embeds only what it uses); None: every page.
    """
    root = handbook_dir()
    key = _corpus_key(root)
    for name in (key, f"{key}-first{max_chunks}"):
        meta_path, vec_path = cache_dir / f"base-{name}.json", cache_dir / f"base-{name}.npy"
        if meta_path.exists() and vec_path.exists():
            raw = json.loads(meta_path.read_text())
            chunks = [BaseChunk(**{**c, "section": tuple(c["section"])}) for c in raw["chunks"]]
            return BaseCorpus(chunks, np.load(vec_path), raw["pages"], raw["skipped"])
    base, complete = _embed_pages(root, max_chunks)
    name = key if complete else f"{key}-first{max_chunks}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache_dir / f"base-{name}.npy", base.vectors)
    meta = {
        "pages": base.pages,
        "skipped": base.skipped,
        "chunks": [{**c.__dict__, "section": list(c.section)} for c in base.chunks],
    }
    (cache_dir / f"base-{name}.json").write_text(json.dumps(meta))
    return base


def _embed_pages(root: Path, max_chunks: int | None) -> tuple[BaseCorpus, bool]:
    from pipelines.chunk import chunk_document
    from pipelines.errors import ParseError
    from pipelines.parse import parse_file
    from retrieval.embedding.factory import get_embedder
    from retrieval.embedding.tokens import HFTokenCounter

    embedder = get_embedder()
    counter = HFTokenCounter(embedder.tokenizer)
    chunks: list[BaseChunk] = []
    texts: list[str] = []
    skipped: list[str] = []
    paths = sorted(root.rglob("*.md"))
    complete = True
    for path in paths:
        if max_chunks is not None and len(chunks) >= max_chunks:
            complete = False
            break
        rel = str(path.relative_to(root))
        try:
            parsed = parse_file(path, doc_id=rel, version="18f")
        except ParseError as exc:  # e.g. a page of front matter only: reported, not indexed
            skipped.append(f"{rel}: {exc}")
            continue
        for c in chunk_document(parsed, counter):
            chunks.append(
                BaseChunk(rel, parsed.title, c.ord, c.text, c.section, c.char_start, c.char_end)
            )
            texts.append(c.embedding_text)
    vectors = embedder.encode_documents(texts).astype(np.float32)
    return BaseCorpus(chunks, vectors, len(paths), skipped), complete


def bench_acl(rng: np.random.Generator) -> Acl:
    """A realistic mix: team groups, some denies, two tenants, a small audited share."""
    r = rng.random()
    if r < 0.30:
        return Acl(allow_groups=frozenset({"all-staff"}), tenant="acme")
    if r < 0.38:
        return Acl(
            allow_groups=frozenset({"all-staff"}),
            deny_groups=frozenset({"contractors"}),
            tenant="acme",
        )
    if r < 0.50:
        return Acl(allow_groups=frozenset({"supervisors"}), tenant="acme")
    if r < 0.60:
        return Acl(allow_groups=frozenset({"hr"}), tenant="acme")
    if r < 0.67:
        return Acl(allow_groups=frozenset({"operations"}), tenant="acme")
    if r < 0.78:
        return Acl(public=True, tenant="acme")
    if r < 0.79:
        return Acl(allow_groups=frozenset({"auditors"}), tenant="audit")
    if r < 0.81:
        return Acl(allow_users=frozenset({"bench-user"}), tenant="acme")
    return Acl(public=True, tenant="globex")


_WORD = re.compile(r"\S+")


def perturb_text(text: str, rng: np.random.Generator, replica: int) -> str:
    """Drop or swap a few words and add the replica token: same topic, not the same row."""
    words = _WORD.findall(text)
    if len(words) > 8:
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(words) - 1))
            if rng.random() < 0.5:
                words[i], words[i + 1] = words[i + 1], words[i]
            else:
                del words[i]
    words.append(f"rep{replica}")
    return " ".join(words)


def perturb_vectors(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = vectors + rng.normal(scale=VECTOR_NOISE, size=vectors.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def replicate(
    chunks: list[BaseChunk], vectors: np.ndarray, n: int, *, seed: int = 0
) -> Iterator[ChunkRecord]:
    """``n`` records: whole-page replicas, in order, the last page possibly cut short."""
    rng = np.random.default_rng(seed)
    pages: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        pages.setdefault(c.doc, []).append(i)
    order = list(pages)
    made = 0
    replica = 0
    modified = datetime(2024, 1, 1, tzinfo=UTC)
    while made < n:
        for page in order:
            rows = pages[page][: n - made]
            acl = bench_acl(rng)
            noisy = perturb_vectors(vectors[rows], rng)
            doc_id = f"r{replica}/{page}"
            for j, row in enumerate(rows):
                c = chunks[row]
                yield ChunkRecord(
                    chunk_id=f"{doc_id}#{c.ord}",
                    doc_id=doc_id,
                    source="18f-bench",
                    ord=c.ord,
                    text=perturb_text(c.text, rng, replica),
                    title=c.title,
                    uri=f"https://handbook.18f.gov/{page}?replica={replica}",
                    path=f"r{replica}/{page}",
                    section=c.section,
                    pages=(),
                    char_start=c.char_start,
                    char_end=c.char_end,
                    doc_version=f"18f-{replica}",
                    doc_type="md",
                    modified_at=modified,
                    acl=acl,
                    vector=noisy[j],
                )
            made += len(rows)
            if made >= n:
                return
        replica += 1


def bench_queries(chunks: list[BaseChunk], n: int, *, seed: int = 1) -> list[str]:
    """Realistic short queries: distinct section and page titles of the handbook."""
    seen: dict[str, None] = {}
    for c in chunks:
        for name in (c.title, *c.section):
            name = name.strip()
            if 2 <= len(name.split()) <= 10 and name.lower() not in seen:
                seen[name.lower()] = None
    titles = list(seen)
    rng = np.random.default_rng(seed)
    rng.shuffle(titles)
    if not titles:
        raise CorpusUnavailableError("the handbook gave no section titles to query with")
    return [titles[i % len(titles)] for i in range(n)]


def document_batches(records: Iterable[ChunkRecord], size: int) -> Iterator[list[ChunkRecord]]:
    """Batches of about ``size`` records that end at a document boundary (upserts replace)."""
    batch: list[ChunkRecord] = []
    for r in records:
        if len(batch) >= size and r.doc_id != batch[-1].doc_id:
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch
