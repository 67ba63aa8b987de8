"""Retrieval evaluation: golden queries in, quality and safety metrics out.

Pure functions over ranked results: no model, no index. The caller supplies
``search_fn`` (one golden query in, ranked :class:`~retrieval.models.Passage`\\ s
out) and, optionally, ``may_read`` (whether the query's principal may read a
returned passage), so the same code scores any backend or configuration.

Ranking metrics look at the ranked list of **distinct documents**: a document
takes the rank of its first passage, later passages of the same document are
ignored. A search that returns three passages of one relevant document has
found one document, not three.

* ``recall@k``: relevant documents among the top k / all relevant documents.
* ``mrr@k``: 1 / rank of the first relevant document in the top k (0 if none).
* ``ndcg@k``: DCG with linear gains (the grade) and the standard ``log2(rank + 1)``
  discount, divided by the DCG of the ideal ordering of the grades.
* citation hit: the query's ``answer`` occurs (whitespace-normalised,
  case-insensitive) in a passage of a relevant document in the top k.
* leaks: returned passages (any rank) under a ``forbidden`` path prefix or that
  the asking principal may not read. Anything above zero is a security bug.

A **negative question** (``relevant: []``) is one whose right answer, for that
principal, is nothing: a permission probe. It counts for leaks and for how the
search answered it (nothing, flagged ``low_confidence``, or confidently), never
for the ranking or citation averages. ``forbidden: [""]`` (the empty prefix)
forbids every document: any passage returned is a leak.

Paths are compared in Unicode NFC, so a golden file typed on one system matches
file names written (decomposed) on another.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.acl import Principal
from core.errors import TroveError
from retrieval.models import Passage

DEFAULT_K = 10
METRIC_CUTOFF = 10  # MRR@10 and nDCG@10 whatever k is


class EvalError(TroveError, ValueError):
    """A golden-query file or an evaluation input is invalid; the message says where."""


# The prefix that matches every path: `forbidden: [""]` forbids every document.
EVERY_DOCUMENT = ""


def path_key(path: str) -> str:
    """The form paths are compared in: NFC, so composed and decomposed names match."""
    return unicodedata.normalize("NFC", path)


def _check_path(path: str, what: str) -> str:
    """A path relative to the source root, as citations spell it, or ValueError.

    A path that can never equal a citation path would silently score zero (in
    ``relevant``) or silently miss a leak (in ``forbidden``), so it is refused.
    """
    if not path.strip():
        raise ValueError(f"{what} must not be blank, got {path!r}")
    if path != path.strip():
        raise ValueError(f"{what} must not start or end with whitespace, got {path!r}")
    if "\\" in path:
        raise ValueError(f"{what} must use forward slashes, got {path!r}")
    if path.startswith("/"):
        raise ValueError(f"{what} must be relative to the source root, got {path!r}")
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"{what} must not hold '.' or '..' segments, got {path!r}")
    return path_key(path)


class GoldenQuery(BaseModel):
    """One line of a golden-query file (JSON Lines).

    ``relevant`` is either a list of document paths (each graded 1) or a mapping
    ``{path: grade}`` with grades > 0; paths are relative to the source root.
    An explicit empty ``relevant`` (``[]`` or ``{}``) makes a negative question:
    nothing should come back (a missing ``relevant`` stays an error, so a typo
    never turns a question into a probe). ``forbidden`` holds path prefixes; the
    empty prefix ``""`` forbids every document.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    query: str = Field(min_length=1)
    user: str = Field(min_length=1)
    groups: list[str] = Field(default_factory=list)
    tenant: str | None = None
    relevant: dict[str, float]
    answer: str | None = None
    forbidden: list[str] = Field(default_factory=list)

    @field_validator("id", "query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # A blank query would fail in the middle of the run, after other searches.
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("relevant", mode="before")
    @classmethod
    def _grades(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not all(isinstance(p, str) for p in value):
                raise ValueError(f"`relevant` as a list must hold paths (strings), got {value!r}")
            return dict.fromkeys(value, 1.0)
        return value

    @field_validator("relevant")
    @classmethod
    def _positive_grades_and_paths(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {path: grade for path, grade in value.items() if not 0 < grade < math.inf}
        if bad:
            raise ValueError(f"relevance grades must be finite and > 0, got {bad!r}")
        return {_check_path(path, "`relevant` paths"): grade for path, grade in value.items()}

    @field_validator("answer")
    @classmethod
    def _answer_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not normalise_text(value):
            raise ValueError("`answer`, when given, must not be blank")
        return value

    @field_validator("forbidden")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        # Only the exact empty string means "every document"; "  " is a typo.
        return [p if p == EVERY_DOCUMENT else _check_path(p, "`forbidden` prefixes") for p in value]

    @model_validator(mode="after")
    def _consistent(self) -> GoldenQuery:
        if self.negative and self.answer is not None:
            raise ValueError("a negative question (`relevant: []`) has no `answer` to cite")
        if EVERY_DOCUMENT in self.forbidden and self.relevant:
            raise ValueError('`forbidden: [""]` forbids every document: `relevant` must be []')
        clash = sorted(
            path for path in self.relevant if any(path.startswith(p) for p in self.forbidden)
        )
        if clash:
            raise ValueError(f"relevant paths under a `forbidden` prefix: {clash!r}")
        # The same identity checks every search applies, at load time with the line number.
        self.principal()
        return self

    @property
    def negative(self) -> bool:
        """True for a question whose right answer, for this principal, is nothing."""
        return not self.relevant

    def principal(self) -> Principal:
        """The identity this query is asked as."""
        return Principal.of(self.user, self.groups, self.tenant)


def load_queries(path: str | Path) -> list[GoldenQuery]:
    """Read a JSON Lines golden-query file; blank lines are skipped.

    :raises EvalError: unreadable file, bad JSON, an invalid query, a repeated
        id (with the file and line number in the message) or no query at all.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"cannot read golden queries {file}: {exc}") from exc
    queries: list[GoldenQuery] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{file}:{lineno}: not valid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise EvalError(f"{file}:{lineno}: expected a JSON object, got {type(data).__name__}")
        try:
            query = GoldenQuery.model_validate(data)
        except ValidationError as exc:
            raise EvalError(f"{file}:{lineno}: invalid golden query: {_brief(exc)}") from exc
        if query.id in seen:
            raise EvalError(
                f"{file}:{lineno}: duplicate query id {query.id!r} (first on line {seen[query.id]})"
            )
        seen[query.id] = lineno
        queries.append(query)
    if not queries:
        # Zero questions would report zero leaks: an empty file is a mistake, not a pass.
        raise EvalError(f"{file}: no golden queries")
    return queries


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<line>'}: {err['msg']}" for err in exc.errors()
    )


# --- metrics on one ranked list -------------------------------------------------


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace to one space, trim, and case-fold."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def ranked_documents(passages: Sequence[Passage]) -> list[str]:
    """Distinct document paths (NFC) in rank order; a document ranks at its first passage."""
    return list(dict.fromkeys(path_key(p.citation.path) for p in passages))


def recall_at_k(ranked_docs: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    _check_k(k)
    if not relevant:
        raise EvalError("recall is undefined without relevant documents")
    found = set(ranked_docs[:k]) & set(relevant)
    return len(found) / len(relevant)


def mrr_at_k(ranked_docs: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none)."""
    _check_k(k)
    for rank, doc in enumerate(ranked_docs[:k], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_docs: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    _check_k(k)
    if not relevant:
        raise EvalError("nDCG is undefined without relevant documents")
    dcg = sum(
        relevant.get(doc, 0.0) / math.log2(rank + 1)
        for rank, doc in enumerate(ranked_docs[:k], start=1)
    )
    ideal_grades = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal_grades, start=1))
    return dcg / idcg


def top_k_passages(passages: Sequence[Passage], k: int) -> list[Passage]:
    """The passages whose document is among the first k distinct documents."""
    _check_k(k)
    kept = set(ranked_documents(passages)[:k])
    return [p for p in passages if path_key(p.citation.path) in kept]


def citation_hit(passages: Sequence[Passage], relevant: Mapping[str, float], answer: str) -> bool:
    """True when ``answer`` occurs in a passage that comes from a relevant document."""
    needle = normalise_text(answer)
    if not needle:
        raise EvalError("citation check needs a non-blank answer")
    return any(
        path_key(p.citation.path) in relevant and needle in normalise_text(p.text) for p in passages
    )


def find_leaks(
    passages: Sequence[Passage],
    forbidden: Sequence[str] = (),
    may_read: Callable[[Passage], bool] | None = None,
) -> list[str]:
    """Chunk ids of passages that should never have been returned, each listed once.

    ``forbidden`` holds path prefixes; the empty prefix matches every path.
    """
    leaked: list[str] = []
    prefixes = [path_key(prefix) for prefix in forbidden]
    for p in passages:
        if p.chunk_id in leaked:
            continue
        path_forbidden = any(path_key(p.citation.path).startswith(prefix) for prefix in prefixes)
        if path_forbidden or (may_read is not None and not may_read(p)):
            leaked.append(p.chunk_id)
    return leaked


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (NumPy's default method), ``q`` in [0, 100]."""
    if not values:
        raise EvalError("percentile of no values")
    if not 0 <= q <= 100:
        raise EvalError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _check_k(k: int) -> None:
    if k < 1:
        raise EvalError(f"k must be >= 1, got {k}")


# --- the evaluation run ------------------------------------------------------------


@dataclass(frozen=True)
class Retrieved:
    """What a search answered: its passages and, when the search judges it, ``low_confidence``.

    A ``search_fn`` returns this, or plain passages when it has no confidence flag
    (the first-stage :class:`~retrieval.search.Searcher` has none; the retrieval
    service has).
    """

    passages: Sequence[Passage]
    low_confidence: bool | None = None


SearchFn = Callable[[GoldenQuery], Sequence[Passage] | Retrieved]
# Whether the principal of the query may read the passage (for example by the
# chunk's ACL in the index). Bound to each query in turn.
MayReadFn = Callable[[GoldenQuery, Passage], bool]


@dataclass(frozen=True)
class QueryResult:
    id: str
    returned: list[str]  # top-k distinct document paths, in rank order
    leaks: list[str]  # chunk ids of leaked passages
    recall: float | None  # None for a negative question, as are the next three
    reciprocal_rank: float | None
    ndcg: float | None
    citation_hit: bool | None  # also None when the query has no `answer`
    latency_ms: float
    negative: bool = False
    passages: int = 0  # passages returned, any rank
    low_confidence: bool | None = None  # None when the search does not judge confidence


@dataclass(frozen=True)
class NegativeSummary:
    """How the negative questions were answered; the three answer counts add up."""

    questions: int
    empty_answers: int  # nothing returned: the right answer
    low_confidence: int | None  # passages returned, flagged low_confidence
    confident_answers: int | None  # passages returned, not flagged
    leaks: int
    passages_returned: int

    def to_dict(self) -> dict[str, int | None]:
        return {
            "questions": self.questions,
            "empty_answers": self.empty_answers,
            "low_confidence": self.low_confidence,
            "confident_answers": self.confident_answers,
            "leaks": self.leaks,
            "passages_returned": self.passages_returned,
        }


@dataclass(frozen=True)
class EvalReport:
    k: int
    results: list[QueryResult] = field(default_factory=list)

    @property
    def leaks(self) -> int:
        """Every leak, negative questions included."""
        return sum(len(r.leaks) for r in self.results)

    def mean(self, metric: str) -> float | None:
        """The mean over the questions that have the metric (negative questions have none)."""
        values = [v for r in self.results if (v := getattr(r, metric)) is not None]
        return sum(values) / len(values) if values else None

    @property
    def citation_hit_rate(self) -> float | None:
        checked = [r.citation_hit for r in self.results if r.citation_hit is not None]
        return sum(checked) / len(checked) if checked else None

    def latency_ms(self, q: float) -> float | None:
        latencies = [r.latency_ms for r in self.results]
        return percentile(latencies, q) if latencies else None

    def negative(self) -> NegativeSummary:
        negatives = [r for r in self.results if r.negative]
        answered = [r for r in negatives if r.passages]
        judged = all(r.low_confidence is not None for r in answered)
        flagged = sum(bool(r.low_confidence) for r in answered)
        return NegativeSummary(
            questions=len(negatives),
            empty_answers=len(negatives) - len(answered),
            low_confidence=flagged if judged else None,
            confident_answers=len(answered) - flagged if judged else None,
            leaks=sum(len(r.leaks) for r in negatives),
            passages_returned=sum(r.passages for r in negatives),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": len(self.results),
            "k": self.k,
            # Key names are the CLI's JSON contract: recall at the requested k,
            # MRR and nDCG always at a cutoff of 10. Averages leave out negative
            # questions, which have nothing to find.
            "recall@k": self.mean("recall"),
            "mrr@10": self.mean("reciprocal_rank"),
            "ndcg@10": self.mean("ndcg"),
            "citation_hit_rate": self.citation_hit_rate,
            "leaks": self.leaks,
            "negative": self.negative().to_dict(),
            "latency_ms": {"p50": self.latency_ms(50), "p95": self.latency_ms(95)},
            "per_query": [
                {
                    "id": r.id,
                    "returned": list(r.returned),
                    "leaks": list(r.leaks),
                    "negative": r.negative,
                }
                for r in self.results
            ],
        }


def evaluate_one(
    query: GoldenQuery,
    passages: Sequence[Passage],
    k: int = DEFAULT_K,
    may_read: MayReadFn | None = None,
    latency_ms: float = 0.0,
    low_confidence: bool | None = None,
) -> QueryResult:
    """Score one query's ranked passages (a negative question: leaks and counts only)."""
    docs = ranked_documents(passages)
    reader = None if may_read is None else (lambda p: may_read(query, p))
    recall = reciprocal_rank = ndcg = None
    hit = None
    if not query.negative:
        recall = recall_at_k(docs, query.relevant, k)
        reciprocal_rank = mrr_at_k(docs, query.relevant, METRIC_CUTOFF)
        ndcg = ndcg_at_k(docs, query.relevant, METRIC_CUTOFF)
        if query.answer is not None:
            hit = citation_hit(top_k_passages(passages, k), query.relevant, query.answer)
    return QueryResult(
        id=query.id,
        returned=docs[:k],
        leaks=find_leaks(passages, query.forbidden, reader),
        recall=recall,
        reciprocal_rank=reciprocal_rank,
        ndcg=ndcg,
        citation_hit=hit,
        latency_ms=latency_ms,
        negative=query.negative,
        passages=len(passages),
        low_confidence=low_confidence,
    )


def evaluate(
    queries: Sequence[GoldenQuery],
    search_fn: SearchFn,
    k: int = DEFAULT_K,
    may_read: MayReadFn | None = None,
) -> EvalReport:
    """Run every query through ``search_fn``, timing each call, and score the results.

    Exceptions from ``search_fn`` propagate: a failed search is not a zero score.
    """
    _check_k(k)
    results: list[QueryResult] = []
    for query in queries:
        started = time.perf_counter()
        answer = search_fn(query)
        retrieved = answer if isinstance(answer, Retrieved) else Retrieved(answer)
        passages = list(retrieved.passages)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        results.append(
            evaluate_one(query, passages, k, may_read, elapsed_ms, retrieved.low_confidence)
        )
    return EvalReport(k=k, results=results)
