"""`trove eval` over a small embedded index (lexical mode: no query model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.acl import Acl, Principal
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from retrieval.search import Searcher
from tests.retrieval.builders import DIM, record
from trove import cli

STAFF = Acl(allow_groups=frozenset({"staff"}))
# Granted only through a source group that the group directory adds at query time.
WIKI_FINANCE = Acl(allow_groups=frozenset({"wiki:group:finance"}))


class DirectoryOf:
    """A group directory: adds the listed source groups to a user."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups

    def expand(self, principal: Principal) -> Principal:
        extra = self.groups.get(principal.user, set())
        return Principal.of(principal.user, principal.groups | extra, principal.tenant)


@pytest.fixture
def searcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(7)
    records = [
        record("faq", 0, "travel policy hotel per diem", STAFF, rng=rng, path="handbook/faq.md"),
        record("budget", 0, "travel budget per team", WIKI_FINANCE, rng=rng, path="fin/b.xlsx"),
    ]
    index = EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM)
    index.apply(WriteBatch(upserts=records))
    found = Searcher(index, None, identity=DirectoryOf({"priya": {"wiki:group:finance"}}))
    monkeypatch.setattr(cli, "_settings", lambda config: (None, tmp_path / "trove.yaml"))
    monkeypatch.setattr(cli, "_open_searcher", lambda settings: found)
    yield found
    index.close()


def golden(tmp_path: Path, *queries: dict) -> str:
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    return str(path)


def run_eval(*args: str):
    return CliRunner().invoke(cli.app, ["eval", "--mode", "lexical", *args])


def test_negative_questions_get_their_own_block(searcher, tmp_path: Path) -> None:
    queries = golden(
        tmp_path,
        {"id": "q1", "query": "hotel per diem", "user": "sam", "groups": ["staff"],
         "relevant": ["handbook/faq.md"]},
        # Someone with no groups: nothing may come back.
        {"id": "n1", "query": "travel policy", "user": "guest", "relevant": [],
         "forbidden": [""]},
        # Staff may read the FAQ, but the probe forbids the handbook: a leak.
        {"id": "n2", "query": "travel policy", "user": "sam", "groups": ["staff"],
         "relevant": [], "forbidden": ["handbook/"]},
    )  # fmt: skip
    result = run_eval("--queries", queries, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 3
    assert report["recall@k"] == 1.0  # q1 alone
    assert report["negative"] == {
        "questions": 2,
        "empty_answers": 1,
        "low_confidence": None,  # the first-stage searcher does not judge confidence
        "confident_answers": None,
        "leaks": 1,
        "passages_returned": 1,
    }
    assert report["leaks"] == 1
    assert [q["leaks"] for q in report["per_query"]] == [[], [], ["faq#0"]]


def test_leaks_are_judged_as_the_search_ran_with_directory_groups(searcher, tmp_path: Path) -> None:
    # priya reads fin/b.xlsx through a source group only the directory knows of:
    # that is a permitted answer, not a leak.
    queries = golden(
        tmp_path,
        {"id": "q1", "query": "travel budget", "user": "priya", "groups": ["staff"],
         "relevant": ["fin/b.xlsx"]},
    )  # fmt: skip
    result = run_eval("--queries", queries, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["per_query"][0]["returned"][0] == "fin/b.xlsx"
    assert report["leaks"] == 0


def test_text_output_with_only_negative_questions(searcher, tmp_path: Path) -> None:
    queries = golden(
        tmp_path,
        {"id": "n1", "query": "travel policy", "user": "guest", "relevant": [],
         "forbidden": [""]},
    )  # fmt: skip
    result = run_eval("--queries", queries)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "recall@10 n/a" in text
    assert "1 negative questions" in text
    assert "1 answered with nothing" in text
    assert "leaks 0" in text


def test_an_invalid_golden_file_names_the_line(searcher, tmp_path: Path) -> None:
    queries = golden(
        tmp_path,
        {"id": "n1", "query": "q", "user": "guest", "relevant": [], "forbidden": ["  "]},
    )
    result = run_eval("--queries", queries)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "golden.jsonl:1:" in text and "`forbidden` prefixes must not be blank" in text


class HashEncoder:
    """Any text to a fixed pseudo-random unit vector: dense search without a model."""

    def encode_query(self, text: str) -> np.ndarray:
        seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")
        vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
        return vector / np.linalg.norm(vector)


def test_stages_count_negative_questions_apart(searcher, tmp_path: Path) -> None:
    from retrieval.service import RetrievalService
    from trove.commands.serve import evaluate_stages

    hybrid = Searcher(searcher.index, HashEncoder(), identity=searcher.identity)
    service = RetrievalService(searcher.index, hybrid)
    queries = golden(
        tmp_path,
        {"id": "q1", "query": "hotel per diem", "user": "sam", "groups": ["staff"],
         "relevant": ["handbook/faq.md"]},
        {"id": "q2", "query": "travel budget", "user": "priya", "groups": ["staff"],
         "relevant": ["fin/b.xlsx"]},
        {"id": "n1", "query": "travel policy", "user": "guest", "relevant": [],
         "forbidden": [""]},
    )  # fmt: skip
    report = evaluate_stages(service, Path(queries), k=5)
    for stage in ("fusion", "fusion+rerank+diversify"):
        negative = report[stage]["negative"]
        assert negative["questions"] == 1 and negative["empty_answers"] == 1
        # The service judges confidence, so the answered count is known (none here).
        assert negative["low_confidence"] == 0 and negative["confident_answers"] == 0
        # priya's directory group grants fin/b.xlsx: not a leak.
        assert report[stage]["leaks"] == 0
    # Only the two answerable questions calibrate the low_confidence threshold.
    assert len(report["low_confidence"]["best_evidence_answerable"]) == 2


def test_stages_with_only_negative_questions_measure_no_threshold(searcher, tmp_path: Path) -> None:
    from retrieval.service import RetrievalService
    from trove.commands.serve import evaluate_stages

    hybrid = Searcher(searcher.index, HashEncoder(), identity=searcher.identity)
    queries = golden(
        tmp_path,
        {"id": "n1", "query": "travel policy", "user": "guest", "relevant": [],
         "forbidden": [""]},
    )  # fmt: skip
    report = evaluate_stages(RetrievalService(searcher.index, hybrid), Path(queries), k=5)
    assert report["fusion"]["recall@k"] is None
    assert report["fusion"]["negative"]["empty_answers"] == 1
    assert report["low_confidence"]["flagged_answerable"] is None
    assert report["low_confidence"]["measured_best"] is None
    assert report["low_confidence"]["best_evidence_answerable"] == []
