"""Runs inside a virtualenv holding only ``trove[client]`` (scripts/check-client-install.sh).

Checks that the installed client, not the source tree, is what runs; that the heavy
libraries are absent; and that against a real Trove server it searches with
citations and that permissions hold: the reader finds the restricted document,
the outsider neither finds it nor can fetch it, and a bad token is refused.

Usage: python client_install_check.py URL READER_TOKEN OUTSIDER_TOKEN
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import sysconfig
from pathlib import Path

# Absent from a client-only install: each would mean the extras leak.
MUST_BE_ABSENT = ("torch", "unstructured", "dagster", "boto3", "numpy", "fastapi")
QUERY = "salary band for a senior engineer in Rotterdam"
RESTRICTED_PATH = "hr/salary-bands.md"


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"client install check FAILED: {what}")
    print(f"ok: {what}")


def main(url: str, reader_token: str, outsider_token: str) -> None:
    import retrieval.client as client_module
    from retrieval.client import (
        AsyncTroveClient,
        TroveAuthError,
        TroveClient,
        TroveNotFoundError,
    )

    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    installed = Path(client_module.__file__).resolve()
    check(site_packages in installed.parents, f"retrieval.client comes from {site_packages}")
    absent = [name for name in MUST_BE_ABSENT if importlib.util.find_spec(name) is not None]
    check(absent == [], f"none of {', '.join(MUST_BE_ABSENT)} is installed")

    with TroveClient(url, token=reader_token) as reader:
        answer = reader.search(QUERY, top_k=5)
        check(len(answer.results) > 0, "the reader's search returns passages")
        top = answer.results[0].citation
        check(top.path == RESTRICTED_PATH, f"the reader's best passage cites {RESTRICTED_PATH}")
        check(
            bool(top.title and top.uri and top.deep_link and top.doc_version),
            "the citation has a title, a URI, a deep link and the document version",
        )
        check(0 <= top.char_start < top.char_end, "the citation has a character span")
        restricted_id = top.doc_id
        document = reader.document(restricted_id)
        check(document.chunk_count >= 1, "the reader can fetch the restricted document")

    with TroveClient(url, token=outsider_token) as outsider:
        answer = outsider.search(QUERY, top_k=10)
        paths = [result.citation.path for result in answer.results]
        check(len(paths) > 0, "the outsider's search returns the passages it may read")
        check(RESTRICTED_PATH not in paths, "the outsider's search never returns the document")
        try:
            outsider.document(restricted_id)
        except TroveNotFoundError:
            check(True, "fetching the document as the outsider is a 404")
        else:
            check(False, "fetching the document as the outsider is a 404")

    with TroveClient(url, token=reader_token + "x") as forger:
        try:
            forger.search(QUERY)
        except TroveAuthError as error:
            check(error.status == 401, "a token with a bad signature is refused (401)")
        else:
            check(False, "a token with a bad signature is refused (401)")

    async def search_async() -> list[str]:
        async with AsyncTroveClient(url, token=reader_token) as reader:
            answer = await reader.search(QUERY, top_k=3)
            return [result.citation.path for result in answer.results]

    check(RESTRICTED_PATH in asyncio.run(search_async()), "the async client searches too")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
