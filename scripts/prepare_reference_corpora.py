"""Install (or check) and prepare the reference-manual corpora of the quality benchmarks.

Two golden sets besides the 18F handbook are written over reference material
from Debian packages, where identifiers and exact terms matter more than in a
handbook (docs/benchmarks.md#retrieval-quality):

* ``python-library``: pages of the Python 3.11 library reference
  (``python3.11-doc``), listed in ``benchmarks/python-library/pages.txt``;
* ``postgresql-manual``: the SQL command reference and the client and server
  applications of the PostgreSQL 15 manual (``postgresql-doc-15``), listed in
  ``benchmarks/postgresql-manual/pages.txt``.

Each listed HTML page becomes one Markdown file (headings, paragraphs, list
items, definition terms such as function signatures, code blocks, table rows;
navigation and permalink marks dropped) under ``<out>/<set>/``, beside the
project and never inside it (default ``~/.cache/trove/corpora``: ``../shared``
holds the corpora the project is given, and is not written to).
``MANIFEST.json`` records the package version and a digest of every file, so
two runs with the same package produce byte-identical corpora.

Usage::

    python scripts/prepare_reference_corpora.py            # check, convert
    python scripts/prepare_reference_corpora.py --install  # apt-get install if missing (root)
    trove ingest -c benchmarks/python-library/trove.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("~/.cache/trove/corpora").expanduser()

_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = {
    *_HEADINGS,
    "p",
    "pre",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "div",
    "section",
    "table",
    "tr",
    "blockquote",
}


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    package: str
    html_dir: Path
    # CSS selector of the page's content; `drop` removes navigation and marks inside it.
    content: str
    drop: tuple[str, ...]

    @property
    def pages_file(self) -> Path:
        return PROJECT / "benchmarks" / self.name / "pages.txt"


CORPORA = {
    "python-library": CorpusSpec(
        name="python-library",
        package="python3.11-doc",
        html_dir=Path("/usr/share/doc/python3.11/html/library"),
        content="div.body",
        drop=("a.headerlink",),
    ),
    "postgresql-manual": CorpusSpec(
        name="postgresql-manual",
        package="postgresql-doc-15",
        html_dir=Path("/usr/share/doc/postgresql-doc-15/html"),
        content="body",
        drop=("div.navheader", "div.navfooter"),
    ),
}


class PrepareError(RuntimeError):
    """A package is missing and cannot be installed, or a listed page is absent."""


def listed_pages(spec: CorpusSpec) -> list[str]:
    lines = spec.pages_file.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def package_version(package: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}|${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    status, _, version = done.stdout.partition("|")
    return version if done.returncode == 0 and status.endswith(" installed") else None


def ensure_package(spec: CorpusSpec, install: bool) -> str:
    """The installed version of the spec's package; installs it first when asked (root)."""
    version = package_version(spec.package)
    if version is not None and spec.html_dir.is_dir():
        return version
    if not install:
        raise PrepareError(
            f"{spec.package} is not installed: run with --install (as root), "
            f"or `apt-get install {spec.package}`"
        )
    if os.geteuid() != 0:
        raise PrepareError(f"installing {spec.package} needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", spec.package], check=True, env=env)
    version = package_version(spec.package)
    if version is None or not spec.html_dir.is_dir():
        raise PrepareError(f"{spec.package} installed, but {spec.html_dir} is missing")
    return version


def _text(node: Tag | NavigableString) -> str:
    return " ".join(node.get_text(" ").split())


def _has_block(tag: Tag) -> bool:
    return any(isinstance(d, Tag) and d.name in _BLOCKS for d in tag.descendants)


def blocks(node: Tag) -> Iterator[str]:
    """Markdown blocks of ``node``'s content, in document order."""
    loose: list[str] = []  # inline text directly inside a container that also holds blocks
    for child in node.children:
        if isinstance(child, NavigableString):
            if child.strip() and type(child) is NavigableString:
                loose.append(str(child))
            continue
        if not isinstance(child, Tag) or child.name in ("script", "style"):
            continue
        if child.name not in _BLOCKS:
            loose.append(child.get_text(" "))
            continue
        if loose:
            text = " ".join(" ".join(loose).split())
            loose = []
            if text:
                yield text
        if child.name in _HEADINGS:
            text = _text(child)
            if text:
                yield f"{'#' * _HEADINGS[child.name]} {text}"
        elif child.name == "pre":
            code = child.get_text().strip("\n")
            if code.strip():
                yield f"```\n{code}\n```"
        elif child.name == "tr":
            cells = [_text(c) for c in child.find_all(["td", "th"])]
            if any(cells):
                yield " | ".join(cells)
        elif not _has_block(child):
            text = _text(child)
            if text:
                yield f"- {text}" if child.name == "li" else text
        else:
            yield from blocks(child)
    if loose:
        text = " ".join(" ".join(loose).split())
        if text:
            yield text


def to_markdown(html: bytes, spec: CorpusSpec) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    content = soup.select_one(spec.content)
    if content is None:
        raise PrepareError(f"no {spec.content!r} element in the page")
    for selector in spec.drop:
        for node in content.select(selector):
            node.decompose()
    return "\n\n".join(blocks(content)) + "\n"


def prepare(spec: CorpusSpec, out: Path, install: bool) -> dict[str, object]:
    """Convert the listed pages into ``out/<spec.name>``; returns the manifest written there."""
    version = ensure_package(spec, install)
    target = out / spec.name
    staging = out / f".{spec.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    files: dict[str, str] = {}
    for stem in listed_pages(spec):
        source = spec.html_dir / f"{stem}.html"
        if not source.is_file():
            raise PrepareError(f"{source} is listed in {spec.pages_file} but missing")
        try:
            text = to_markdown(source.read_bytes(), spec)
        except PrepareError as exc:
            raise PrepareError(f"{source}: {exc}") from exc
        data = text.encode("utf-8")
        (staging / f"{stem}.md").write_bytes(data)
        files[f"{stem}.md"] = hashlib.sha256(data).hexdigest()
    manifest = {
        "corpus": spec.name,
        "package": spec.package,
        "version": version,
        "pages": len(files),
        "digest": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
        "files": files,
    }
    (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    # Replace the corpus in one step, so a reader never sees half of one.
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--install", action="store_true", help="apt-get install what is missing")
    parser.add_argument("corpora", nargs="*", help=f"default: all of {sorted(CORPORA)}")
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(PROJECT):
        print(f"error: {args.out} is inside the project; corpora live beside it", file=sys.stderr)
        return 2
    unknown = sorted(set(args.corpora) - set(CORPORA))
    if unknown:
        print(f"error: unknown corpora {unknown} (valid: {sorted(CORPORA)})", file=sys.stderr)
        return 2
    for name in args.corpora or list(CORPORA):
        try:
            manifest = prepare(CORPORA[name], args.out, args.install)
        except (PrepareError, OSError, subprocess.CalledProcessError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 1
        print(
            f"{name}: {manifest['pages']} pages from {manifest['package']} {manifest['version']} "
            f"-> {args.out / name} (digest {str(manifest['digest'])[:12]})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
