"""The permission filter inside the embedded index: exactly ``Acl.permits``, both retrievers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.acl import Acl, Principal
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from retrieval.index.embedded.acl_table import AclTable
from tests.retrieval.builders import DIM, record, unit

A = frozenset
CASES: list[tuple[str, Acl, Principal, bool]] = [
    ("allow user", Acl(allow_users=A({"alice"})), Principal.of("alice"), True),
    ("other user", Acl(allow_users=A({"alice"})), Principal.of("bob"), False),
    ("allow group", Acl(allow_groups=A({"hr"})), Principal.of("bob", ["hr"]), True),
    ("group missing", Acl(allow_groups=A({"hr"})), Principal.of("bob", ["it"]), False),
    ("public", Acl(public=True), Principal.of("anyone"), True),
    (
        "deny user beats allow",
        Acl(allow_users=A({"al"}), deny_users=A({"al"})),
        Principal.of("al"),
        False,
    ),
    ("deny user beats public", Acl(public=True, deny_users=A({"al"})), Principal.of("al"), False),
    (
        "deny group beats allow group",
        Acl(allow_groups=A({"hr"}), deny_groups=A({"temps"})),
        Principal.of("al", ["hr", "temps"]),
        False,
    ),
    (
        "deny group beats public",
        Acl(public=True, deny_groups=A({"x"})),
        Principal.of("al", ["x"]),
        False,
    ),
    (
        "deny other group harmless",
        Acl(public=True, deny_groups=A({"x"})),
        Principal.of("al", ["y"]),
        True,
    ),
    ("tenant match", Acl(public=True, tenant="acme"), Principal.of("al", tenant="acme"), True),
    ("tenant mismatch", Acl(public=True, tenant="acme"), Principal.of("al", tenant="other"), False),
    ("tenant needed", Acl(public=True, tenant="acme"), Principal.of("al"), False),
    ("no tenant on chunk", Acl(public=True), Principal.of("al", tenant="acme"), True),
    ("empty acl", Acl.empty(), Principal.of("al", ["hr"], tenant="acme"), False),
]


@pytest.fixture(scope="module")
def acl_index(tmp_path_factory):
    """One chunk per case, all sharing a query term and near-identical vectors."""
    rng = np.random.default_rng(3)
    base = unit(rng)
    recs = [
        record(f"case{i}", 0, "shared term", acl, vector=base + 0.01 * unit(rng))
        for i, (_, acl, _, _) in enumerate(CASES)
    ]
    ix = EmbeddedIndex.open(tmp_path_factory.mktemp("acl") / "ix", create=True, dimensions=DIM)
    ix.apply(WriteBatch(upserts=recs))
    yield ix, base
    ix.close()


@pytest.mark.parametrize(("name", "acl", "principal", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_acl_semantics_lexical_and_dense(acl_index, name, acl, principal, allowed):
    ix, base = acl_index
    assert acl.permits(principal) is allowed  # the table agrees with the contract
    chunk = f"case{CASES.index((name, acl, principal, allowed))}#0"
    expected = {f"case{i}#0" for i, (_, a, _, _) in enumerate(CASES) if a.permits(principal)}
    lexical = {h.chunk_id for h in ix.search_lexical("shared", principal, 100)}
    dense = {h.chunk_id for h in ix.search_dense(base, principal, 100)}
    assert lexical == dense == expected
    assert (chunk in lexical) is allowed


names = st.sampled_from(["a", "b", "c", "d"])
name_sets = st.frozensets(names, max_size=3)
tenants = st.one_of(st.none(), st.sampled_from(["t1", "t2"]))
acls = st.builds(
    Acl,
    allow_users=name_sets,
    allow_groups=name_sets,
    deny_users=name_sets,
    deny_groups=name_sets,
    tenant=tenants,
    public=st.booleans(),
)
principals = st.builds(Principal.of, user=names, groups=name_sets, tenant=tenants)


@settings(max_examples=150, deadline=None)
@given(table=st.lists(acls, min_size=1, max_size=12), principal=principals)
def test_vectorised_table_equals_acl_permits(table, principal):
    got = AclTable.build(table).permitted_rows(principal)
    assert got.tolist() == [a.permits(principal) for a in table]


def test_acl_table_update_compacts_and_keeps_other_rows():
    hr, it = Acl(allow_groups=A({"hr"})), Acl(allow_groups=A({"it"}))
    table = AclTable.build([hr, hr, it, it])
    updated = table.with_updates(np.array([2, 3]), hr)
    assert updated.acls == [hr] and updated.codes.tolist() == [0, 0, 0, 0]
    updated = table.with_updates(np.array([0]), Acl.empty())
    assert [updated.acls[c] for c in updated.codes] == [Acl.empty(), hr, it, it]
