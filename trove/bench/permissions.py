"""`python -m trove.bench.permissions`: the query-time cost of permissions from connectors.

Two costs a connector's permissions add to every search, printed as JSON:

* **group expansion** — :meth:`retrieval.directory.GroupDirectory.expand` on a
  directory of 10,000 users, 1,000 groups and 100,000 memberships;
* **restriction layers** — the embedded index's per-query ACL mask
  (:class:`retrieval.index.embedded.acl_table.AclTable`) over 2,000 plain ACLs
  plus 0, 1,000 or 10,000 distinct layered ones (a Confluence wiki where every
  restricted page has its own chain), for a principal in every space group.

Synthetic and deterministic (seeded); no model, no corpus.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from connectors.base import DirectoryUser, GroupSnapshot
from core.acl import Acl, AclLayer, Principal
from retrieval.directory import GroupDirectory
from retrieval.index.embedded.acl_table import AclTable


def _median_ms(fn, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 4),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 4),
    }


def bench_expansion(users: int = 10_000, groups: int = 1_000, per_group: int = 100) -> dict:
    rng = random.Random(0)
    emails = [f"user{i}@acme.com" for i in range(users)]
    members = {
        f"wiki:group:g{g}": frozenset(
            f"wiki:user:acc{m}" for m in rng.sample(range(users), per_group)
        )
        for g in range(groups)
    }
    snapshot = GroupSnapshot(
        "wiki",
        members,
        users=[DirectoryUser(f"wiki:user:acc{i}", frozenset({e})) for i, e in enumerate(emails)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = GroupDirectory.in_state_dir(Path(tmp))
        started = time.perf_counter()
        directory.replace_source(snapshot)
        sync_s = time.perf_counter() - started
        result = _median_ms(
            lambda: directory.expand(Principal.of(emails[rng.randrange(users)])), 2_000
        )
        directory.close()
    return {
        "users": users,
        "groups": groups,
        "memberships": groups * per_group,
        "sync_s": round(sync_s, 3),
        **result,
    }


def bench_layers(layered: int, plain: int = 2_000) -> dict[str, Any]:
    acls = [Acl(allow_groups=frozenset({f"wiki:group:s{i % 50}"})) for i in range(plain)]
    acls += [
        Acl(
            allow_groups=frozenset({f"wiki:group:s{i % 50}"}),
            layers=(
                AclLayer(
                    users=frozenset({f"u{i}@acme.com"}),
                    groups=frozenset({f"wiki:group:g{i % 300}"}),
                ),
            ),
        )
        for i in range(layered)
    ]
    table = AclTable(acls, np.arange(len(acls), dtype=np.int32))
    groups = [f"wiki:group:s{i}" for i in range(50)] + [f"wiki:group:g{i}" for i in range(20)]
    principal = Principal.of("u5@acme.com", groups)
    return {"acls": len(acls), "layered": layered, **_median_ms(
        lambda: table.permitted_acls(principal), 300
    )}  # fmt: skip


def main() -> None:
    print(
        json.dumps(
            {
                "group_expansion": bench_expansion(),
                "acl_mask": [bench_layers(n) for n in (0, 1_000, 10_000)],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
