"""Precision and recall of prompt-injection screening on the labelled set.

Each line of ``benchmarks/injection/labelled.jsonl`` is
``{"id", "text", "label": 0|1, "kind", "split": "dev"|"test"}``; lines with
``"format": "html"`` hold a raw page, scored as the highest of the page text
and each hidden snippet found by :func:`pipelines.injection.screen_html`.
Every fourth line is in the ``test`` split and was never used to tune the
patterns or weights, so its numbers are the honest ones.

``--speed N`` instead times the screen on ``N`` real chunks of the 18F handbook
(:func:`trove.bench.embed.sample_chunks`): CPU seconds of the fast path and of the
exhaustive evaluation it must equal, interleaved, and how many results differ.

Usage::

    python -m trove.bench.injection [--path FILE] [--threshold 0.5]
    python -m trove.bench.injection --speed 2000 [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "injection" / "labelled.jsonl"
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def load(path: Path) -> list[dict[str, Any]]:
    """The labelled records; raises ValueError naming the first bad line."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("label") not in (0, 1) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{n}: needs a str text and label 0 or 1, got {line[:80]!r}")
        records.append(record)
    return records


def record_score(record: dict[str, Any]) -> float:
    """A record's risk: its text, or for HTML the riskiest of the page and its hidden text."""
    from pipelines.injection import score_text, screen_html

    text = record["text"]
    if record.get("format") != "html":
        return score_text(text).score
    return max(score_text(s).score for s in [text, *screen_html(text)])


def _metrics(scored: list[tuple[dict[str, Any], float]], threshold: float) -> dict[str, Any]:
    tp = sum(1 for r, s in scored if s >= threshold and r["label"] == 1)
    fp = sum(1 for r, s in scored if s >= threshold and r["label"] == 0)
    fn = sum(1 for r, s in scored if s < threshold and r["label"] == 1)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "examples": len(scored),
        "positives": tp + fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def run(path: Path | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Score every record; metrics at ``threshold`` (default: the config default) and a sweep."""
    from pipelines.config import InjectionConfig

    threshold = InjectionConfig().threshold if threshold is None else threshold
    records = load(path or DEFAULT_PATH)
    start = time.perf_counter()
    scored = [(r, record_score(r)) for r in records]
    elapsed = time.perf_counter() - start
    overall = _metrics(scored, threshold)
    test = [(r, s) for r, s in scored if r.get("split") == "test"]
    return {
        **overall,
        "threshold": threshold,
        "test_split": _metrics(test, threshold),
        "sweep": [
            {"threshold": t, **{k: _metrics(scored, t)[k] for k in ("precision", "recall")}}
            for t in SWEEP
        ],
        "false_positives": [r["id"] for r, s in scored if s >= threshold and r["label"] == 0],
        "false_negatives": [r["id"] for r, s in scored if s < threshold and r["label"] == 1],
        "ms_per_example": round(1000 * elapsed / max(1, len(records)), 3),
    }


def speed(texts: list[str], repeats: int = 5) -> dict[str, Any]:
    """CPU seconds to score ``texts``, fast path vs exhaustive, interleaved (medians).

    ``differences`` counts texts whose score or signals differ between the two: 0.
    """
    from pipelines.injection import _score, score_text

    scorers = {"fast": score_text, "exhaustive": lambda t: _score(t, 0, exhaustive=True)}
    seconds: dict[str, list[float]] = {name: [] for name in scorers}
    results: dict[str, list[Any]] = {}
    for _ in range(repeats):
        for name, scorer in scorers.items():
            start = time.process_time()
            results[name] = [scorer(t) for t in texts]
            seconds[name].append(time.process_time() - start)
    fast, exhaustive = (statistics.median(seconds[n]) for n in ("fast", "exhaustive"))
    return {
        "texts": len(texts),
        "repeats": repeats,
        "fast_cpu_s": round(fast, 3),
        "exhaustive_cpu_s": round(exhaustive, 3),
        "speedup": round(exhaustive / fast, 2) if fast else None,
        "differences": sum(
            a != b for a, b in zip(results["fast"], results["exhaustive"], strict=True)
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--speed", type=int, default=0, metavar="N", help="time N 18F chunks")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.speed:
        from trove.bench.embed import sample_chunks

        result = speed(sample_chunks(args.speed, min_tokens=0), args.repeats)
    else:
        result = run(args.path, args.threshold)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
