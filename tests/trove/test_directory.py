"""The group directory: memberships replaced atomically, identities expanded at query time."""

from __future__ import annotations

import numpy as np

from connectors.base import DirectoryUser, GroupSnapshot
from core.acl import Acl, AclLayer, Principal
from retrieval.directory import GroupDirectory
from retrieval.index.embedded import EmbeddedIndex
from retrieval.search import Searcher
from tests.retrieval.builders import DIM, record


def wiki_snapshot(eng_members: set[str]) -> GroupSnapshot:
    return GroupSnapshot(
        source="wiki",
        members={
            "wiki:group:eng": frozenset(eng_members),
            "wiki:group:leads": frozenset({"wiki:user:acc-bob"}),
            "wiki:group:empty": frozenset(),
        },
        users=[
            DirectoryUser("wiki:user:acc-bob", frozenset({"Bob@Example.com"})),
            DirectoryUser("wiki:user:acc-alice", frozenset({"alice@example.com"})),
        ],
    )


def test_expand_maps_email_to_native_tokens_and_groups(tmp_path):
    d = GroupDirectory.in_state_dir(tmp_path)
    counts = d.replace_source(wiki_snapshot({"wiki:user:acc-alice", "carol@example.com"}))
    assert (counts.groups, counts.users, counts.memberships) == (3, 2, 3)
    alice = d.expand(Principal.of("alice@example.com", ["from-token"]))
    assert alice.groups == {"from-token", "wiki:user:acc-alice", "wiki:group:eng"}
    bob = d.expand(Principal.of("BOB@example.com"))  # identities compare canonically
    assert bob.groups == {"wiki:user:acc-bob", "wiki:group:leads"}
    carol = d.expand(Principal.of("carol@example.com"))  # a member known only by e-mail
    assert carol.groups == {"wiki:group:eng"}
    stranger = Principal.of("eve@example.com", ["x"], tenant="t1")
    assert d.expand(stranger) == stranger
    assert d.known_groups("wiki") == {"wiki:group:eng", "wiki:group:leads", "wiki:group:empty"}


def test_a_sync_replaces_the_source_and_reports_the_difference(tmp_path):
    d = GroupDirectory.in_state_dir(tmp_path)
    d.replace_source(wiki_snapshot({"wiki:user:acc-alice"}))
    other = GroupSnapshot("sp", {"sp:group:g1": frozenset({"alice@example.com"})})
    d.replace_source(other)
    counts = d.replace_source(wiki_snapshot({"wiki:user:acc-bob"}))  # alice left eng, bob joined
    assert (counts.memberships_added, counts.memberships_removed) == (1, 1)
    alice = d.expand(Principal.of("alice@example.com"))
    assert "wiki:group:eng" not in alice.groups
    assert "sp:group:g1" in alice.groups  # another source is untouched
    assert set(d.status()) == {"wiki", "sp"}


def test_tenant_token_goes_to_every_user_the_source_knows(tmp_path):
    d = GroupDirectory.in_state_dir(tmp_path)
    d.replace_source(
        GroupSnapshot(
            "sp",
            {},
            users=[DirectoryUser("sp:user:1", frozenset({"ann@contoso.com"}))],
            tenant_token="sp:tenant:contoso",
        )
    )
    assert "sp:tenant:contoso" in d.expand(Principal.of("ann@contoso.com")).groups
    assert d.expand(Principal.of("guest@elsewhere.com")).groups == frozenset()


def test_nothing_synced_expands_to_nothing_and_creates_no_file(tmp_path):
    d = GroupDirectory.in_state_dir(tmp_path / "state")
    p = Principal.of("alice@example.com")
    assert d.expand(p) is p
    assert not (tmp_path / "state").exists()


def test_searcher_reads_through_the_directory_and_a_membership_change_needs_no_rewrite(tmp_path):
    rng = np.random.default_rng(0)
    layered = Acl(
        allow_groups=frozenset({"wiki:group:eng"}),
        layers=(
            AclLayer(users=frozenset({"bob@example.com"}), groups=frozenset({"wiki:group:leads"})),
        ),
    )
    index = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
    from retrieval.index.base import WriteBatch

    index.apply(WriteBatch(upserts=[
        record("wiki:p1", 0, "release checklist for the payments service", ENG_ONLY, rng=rng),
        record("wiki:p2", 0, "release checklist for the leads only", layered, rng=rng),
    ]))  # fmt: skip
    index.refresh()
    d = GroupDirectory.in_state_dir(tmp_path / "state")
    searcher = Searcher(index, None, identity=d)

    def found(user: str) -> set[str]:
        hits = searcher.search("release checklist", Principal.of(user), k=5, mode="lexical")
        return {p.citation.doc_id for p in hits}

    assert found("alice@example.com") == set()  # nothing synced: fail closed
    d.replace_source(wiki_snapshot({"wiki:user:acc-alice", "wiki:user:acc-bob"}))
    assert found("alice@example.com") == {"wiki:p1"}
    assert found("bob@example.com") == {"wiki:p1", "wiki:p2"}  # eng, and leads via accountId
    d.replace_source(wiki_snapshot({"wiki:user:acc-bob"}))  # alice leaves eng
    assert found("alice@example.com") == set()
    index.close()


ENG_ONLY = Acl(allow_groups=frozenset({"wiki:group:eng"}))


def test_a_tenant_token_inside_a_group_reaches_every_known_user(tmp_path):
    # A SharePoint site group holding "Everyone except external users".
    d = GroupDirectory.in_state_dir(tmp_path)
    d.replace_source(
        GroupSnapshot(
            "sp",
            {"sp:sitegroup:site1:5": frozenset({"sp:tenant:contoso"})},
            users=[DirectoryUser("sp:user:1", frozenset({"ann@contoso.com"}))],
            tenant_token="sp:tenant:contoso",
        )
    )
    assert "sp:sitegroup:site1:5" in d.expand(Principal.of("ann@contoso.com")).groups
    assert d.expand(Principal.of("guest@elsewhere.com")).groups == frozenset()


def test_groups_claim_entries_are_groups_only_never_identities(tmp_path):
    # Issue 16: `groups: ["ceo@corp.com"]` expanded to the CEO's groups, and a native
    # account token in the claim to that account's groups. A claim entry names a group.
    d = GroupDirectory.in_state_dir(tmp_path)
    d.replace_source(wiki_snapshot({"wiki:user:acc-carol", "ceo@corp.com"}))
    eve = d.expand(Principal.of("eve@corp.com", ["ceo@corp.com", "wiki:user:acc-carol"]))
    assert eve.groups == {"ceo@corp.com", "wiki:user:acc-carol"}  # kept, never expanded
    assert "wiki:group:eng" in d.expand(Principal.of("ceo@corp.com")).groups  # as the user


def test_a_claimed_group_the_directory_holds_is_looked_up_as_a_member(tmp_path):
    # A group nested in another (unflattened by its source) still expands, as a group.
    d = GroupDirectory.in_state_dir(tmp_path)
    d.replace_source(
        GroupSnapshot(
            "wiki",
            {"wiki:group:eng": frozenset({"wiki:group:leads"}), "wiki:group:leads": frozenset()},
        )
    )
    lead = d.expand(Principal.of("x@corp.com", ["Wiki:Group:Leads"]))
    assert lead.groups == {"wiki:group:leads", "wiki:group:eng"}
