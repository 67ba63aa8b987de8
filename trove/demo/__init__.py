"""The bundled demo: a fictional company's documents, its config and golden queries.

Northwind Robotics' handbook, engineering, HR, finance and security documents
in every supported format, with folder-based permissions (see ``README.md``
here). ``trove demo`` indexes a copy of :data:`CORPUS_DIR` with
:data:`CONFIG_TEMPLATE`; ``trove eval`` scores retrieval against
:data:`QUERIES_FILE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
CORPUS_DIR = DEMO_DIR / "corpus"
CONFIG_TEMPLATE = DEMO_DIR / "trove.yaml"
QUERIES_FILE = DEMO_DIR / "queries.jsonl"


@dataclass(frozen=True)
class DemoUser:
    user: str
    groups: tuple[str, ...]
    description: str


# The two people `trove demo` shows side by side: same question, different answers.
DEMO_USERS = (
    DemoUser("dana", ("all-staff", "hr"), "HR business partner"),
    DemoUser("sam", ("all-staff", "engineering"), "platform engineer"),
)
# Best answered by hr/salary-bands.xlsx, which only the hr group may read; sam
# gets the handbook's "salary bands are confidential, please ask HR" instead.
DEMO_QUESTION = "What is the pay range for a senior engineer (L4) in Rotterdam?"


def prepare(workdir: Path) -> Path:
    """Copy the corpus and its config into ``workdir``; return the config file's path.

    The config's relative paths (corpus, index, state) then all resolve inside
    ``workdir``, so the demo never writes into the installed package.
    """
    import shutil

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    # symlinks=True: a link in the corpus stays a link (and is then not followed by
    # the filesystem source) instead of becoming a plain copy of whatever it names.
    shutil.copytree(CORPUS_DIR, corpus, symlinks=True)
    config = workdir / "trove.yaml"
    shutil.copyfile(CONFIG_TEMPLATE, config)
    return config
