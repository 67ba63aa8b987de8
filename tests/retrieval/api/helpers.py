"""Builders for service and API tests: a small multi-tenant index with a hashing query
encoder (no model), tokens, and a real uvicorn server on loopback."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from core.acl import Acl
from retrieval.auth import TokenVerifier, mint_token
from retrieval.config import ApiConfig, RetrievalConfig
from retrieval.index.base import ChunkRecord, WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from retrieval.search import Searcher
from retrieval.service import RetrievalService
from trove.config import Settings

SECRET = "test-secret-0123456789-abcdefghijklmnop"
DIM = 64


def hash_vector(text: str, dim: int = DIM) -> np.ndarray:
    """Bag of hashed words: texts sharing words get similar vectors (a stand-in model)."""
    v = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        v[h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    norm = np.linalg.norm(v)
    if norm == 0:
        v[0] = 1.0
        return v
    return v / norm


class HashEncoder:
    dimensions = DIM

    def __init__(self) -> None:
        self.calls = 0

    def encode_query(self, text: str) -> np.ndarray:
        self.calls += 1
        return hash_vector(text)


STAFF = Acl(allow_groups=frozenset({"staff"}))
HR = Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"}))
ENG = Acl(allow_groups=frozenset({"engineering"}))
BOSS = Acl(allow_users=frozenset({"boss"}))
ACME = Acl(allow_groups=frozenset({"staff"}), tenant="acme")
GLOBEX = Acl(allow_groups=frozenset({"staff"}), tenant="globex")

# doc_id -> (path, doc_type, acl, chunk texts, section headings)
DOCS: dict[str, tuple[str, str, Acl, list[str]]] = {
    "hb:leave.md": (
        "handbook/leave.md",
        "md",
        STAFF,
        [
            "Annual leave: every employee gets 27 days of paid leave per year.",
            "Carry over: unused leave days carry over until 31 March of the next year.",
            "Parental leave: new parents get 16 weeks of paid parental leave.",
            "Sick leave: report sick leave to your manager before 10:00.",
        ],
    ),
    "hb:travel.md": (
        "handbook/travel.md",
        "md",
        STAFF,
        ["Travel policy: the per diem for hotel stays is 180 euro per night."],
    ),
    "hr:salary.md": (
        "hr/salary.md",
        "md",
        HR,
        ["Salary bands: a senior engineer L4 in Rotterdam earns 85000 to 98000 euro."],
    ),
    "eng:runbook.pdf": (
        "engineering/runbook.pdf",
        "pdf",
        ENG,
        [
            "On-call runbook: page the incident commander for severity one outages.",
            "Rollback: deploys roll back with the release tool within ten minutes.",
        ],
    ),
    "x:boss.md": ("exec/boss.md", "md", BOSS, ["Board secret: the merger closes in June."]),
    "x:nobody.md": ("exec/nobody.md", "md", Acl.empty(), ["Nobody may read this leave note."]),
    "acme:plan.md": ("plans/acme.md", "md", ACME, ["Acme plan: leave policy for acme staff."]),
    "globex:plan.md": ("plans/globex.md", "md", GLOBEX, ["Globex plan: leave rules for globex."]),
}


def records(docs: dict = DOCS) -> list[ChunkRecord]:
    out = []
    for doc_id, (path, doc_type, acl, texts) in docs.items():
        offset = 0
        for ord_, text in enumerate(texts):
            out.append(
                ChunkRecord(
                    chunk_id=f"{doc_id}#{ord_}",
                    doc_id=doc_id,
                    source=doc_id.split(":")[0],
                    ord=ord_,
                    text=text,
                    title=f"Title of {path}",
                    uri=f"file:///corpus/{path}",
                    path=path,
                    section=("Policies", text.split(":")[0]),
                    pages=(ord_ + 1,) if doc_type == "pdf" else (),
                    char_start=offset,
                    char_end=offset + len(text),
                    doc_version="v1",
                    doc_type=doc_type,
                    modified_at=datetime(2025, 1 + ord_, 1, tzinfo=UTC),
                    acl=acl,
                    vector=hash_vector(text),
                )
            )
            offset += len(text) + 2
    return out


def build_index(path: Path, docs: dict = DOCS) -> EmbeddedIndex:
    index = EmbeddedIndex.open(path, create=True, dimensions=DIM)
    index.apply(WriteBatch(upserts=records(docs)))
    return index


def make_settings(tmp: Path, **api: object) -> Settings:
    api_cfg = {"jwt_secret": SECRET, "audit_log": str(tmp / "audit.jsonl"), **api}
    return Settings(index={"path": str(tmp / "index")}, api=api_cfg)


def make_service(
    tmp: Path,
    *,
    index: EmbeddedIndex | None = None,
    retrieval: RetrievalConfig | None = None,
    identity: object | None = None,
    **api: object,
) -> RetrievalService:
    from retrieval.audit import AuditLog

    settings = make_settings(tmp, **api)
    index = index or build_index(tmp / "index")
    cfg: ApiConfig = settings.api
    retrieval = retrieval or RetrievalConfig()
    return RetrievalService(
        index,
        Searcher.from_config(index, HashEncoder(), retrieval, identity=identity),
        retrieval=retrieval,
        api=cfg,
        verifier=TokenVerifier.from_config(cfg),
        audit=AuditLog(cfg.audit_log, include_queries=cfg.audit_log_queries),
    )


def token(
    user: str = "alice",
    groups: tuple[str, ...] = ("staff",),
    tenant: str | None = None,
    *,
    secret: str = SECRET,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    return mint_token(secret, user, groups, tenant=tenant, ttl=ttl, now=now)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@dataclass
class LiveServer:
    url: str
    server: object
    thread: threading.Thread


@contextmanager
def live_server(app, timeout_s: float = 20.0) -> Iterator[LiveServer]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1 (a free port); stop it cleanly."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test server did not stop")
