"""One canonical form for identities, on every side of every comparison (issue 16, item 4).

The index backends are covered in tests/retrieval/index/test_identity_backends.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import principals
from connectors.base import DirectoryUser, GroupSnapshot
from core.acl import Acl, AclLayer, Principal
from core.acl_policy import AclPolicy
from core.errors import ConfigError
from core.identity import InvalidIdentity, canonical_group, canonical_user
from pipelines.store import ManifestEntry
from pipelines.sync import ACL_ONLY, UNCHANGED, classify
from retrieval.directory import _SCHEMA, GroupDirectory
from tests.trove.spellings import invalid_spellings, names, spellings
from trove.config import settings_from_dict

# The list, against `deny_users: [mallory]`.
SAME_AS_MALLORY = ["Mallory", "MALLORY", "mallory ", "mallory\t", "\tmallory", "ｍａｌｌｏｒｙ"]
NOBODY = ["mal\u200blory", "mallory\u200b", "\u200dmallory", "mal\tlory", "mal\u202elory"]


def hr_policy(tmp_path: Path, rule: dict) -> AclPolicy:
    config = settings_from_dict(
        {"sources": [{"name": "files", "path": str(tmp_path), "acl": {"rules": [rule]}}]},
        tmp_path,
    )
    return AclPolicy.from_config(config.source("files").acl)


# ---------------------------------------------------------------- the issue, reproduced


@pytest.mark.parametrize("spelling", SAME_AS_MALLORY)
def test_a_deny_holds_against_every_spelling_of_the_name(tmp_path, spelling):
    policy = hr_policy(
        tmp_path, {"match": "hr/**", "allow_groups": ["hr"], "deny_users": ["mallory"]}
    )
    acl = policy.acl_for_path("hr/salaries.xlsx")
    assert acl.permits(Principal.of("alice", ["hr"]))
    assert not acl.permits(Principal.of(spelling, ["hr"]))


@pytest.mark.parametrize("spelling", NOBODY)
def test_a_name_with_a_hidden_character_is_refused_not_read_as_someone_else(spelling):
    with pytest.raises(InvalidIdentity):
        Principal.of(spelling, ["hr"])


@pytest.mark.parametrize("spelling", ["Contractors", "CONTRACTORS ", "ｃｏｎｔｒａｃｔｏｒｓ"])
def test_a_group_deny_holds_against_every_spelling_of_the_group(tmp_path, spelling):
    rule = {"match": "**", "allow_groups": ["staff"], "deny_groups": ["contractors"]}
    acl = hr_policy(tmp_path, rule).acl_for_path("plan.md")
    assert not acl.permits(Principal.of("bob", ["staff", spelling]))
    assert acl.permits(Principal.of("bob", ["STAFF"]))


def test_the_directory_and_the_deny_agree_on_who_is_who(tmp_path):
    # The directory matched e-mails case-insensitively, the deny exactly: MALLORY
    # got hr through the directory and slipped past `deny_users: [mallory@corp.com]`.
    directory = GroupDirectory.in_state_dir(tmp_path)
    directory.replace_source(
        GroupSnapshot("wiki", {"wiki:group:hr": frozenset({"Mallory@Corp.com"})})
    )
    acl = Acl(allow_groups=frozenset({"wiki:group:hr"}), deny_users=frozenset({"mallory@corp.com"}))
    for spelling in ("MALLORY@corp.com", "Mallory@Corp.com ", "ｍａｌｌｏｒｙ＠ｃｏｒｐ．ｃｏｍ"):
        expanded = directory.expand(Principal.of(spelling))
        assert "wiki:group:hr" in expanded.groups
        assert not acl.permits(expanded)
    directory.close()


# ---------------------------------------------------------------- the form itself


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("Mallory", "mallory"),
        ("\u00a0Mallory\u3000", "mallory"),
        ("ＭＡＬＬＯＲＹ", "mallory"),
        ("Stra\u00dfe", "strasse"),
        ("Cafe\u0301", "caf\u00e9"),  # NFD folds to NFC
        ("\ufb01le", "file"),  # the fi ligature
    ],
)
def test_canonical_form(spelling, canonical):
    assert canonical_user(spelling) == canonical == canonical_group(spelling)


@pytest.mark.parametrize("value", ["", "   ", "a\x00b", "a\u200bb", "x" * 257, 7, None])
def test_names_without_a_canonical_form_are_refused(value):
    with pytest.raises(InvalidIdentity):
        canonical_user(value)


# ---------------------------------------------------------------- principals and ACLs


def test_a_principal_holds_its_names_in_canonical_form():
    p = Principal.of(" Alice@Example.COM ", ["Eng", "ｈｒ", " "], tenant="ACME")
    assert (p.user, p.groups, p.tenant) == ("alice@example.com", {"eng", "hr"}, "acme")
    assert Principal.of("a", tenant="").tenant is None
    with pytest.raises(InvalidIdentity, match="non-empty user"):
        Principal.of("\u3000")
    with pytest.raises(InvalidIdentity, match="group"):
        Principal.of("alice", ["eng\u200b"])
    with pytest.raises(InvalidIdentity, match="tenant"):
        Principal.of("alice", tenant="ac\u200bme")


def test_tenants_compare_in_canonical_form():
    acl = Acl(allow_groups=frozenset({"eng"}), tenant="Acme")
    assert acl.tenant == "acme"
    assert acl.permits(Principal.of("bob", ["eng"], tenant="ACME "))
    assert not acl.permits(Principal.of("bob", ["eng"], tenant="globex"))


def test_an_allow_entry_without_a_canonical_form_grants_nothing():
    acl = Acl(allow_users=frozenset({"alice", "bob\u200b"}), allow_groups=frozenset({"x\x00"}))
    assert (acl.allow_users, acl.allow_groups) == ({"alice"}, frozenset())
    layer = AclLayer(users=frozenset({"bob\u200b"}), groups=frozenset({"eng"}))
    assert (layer.users, layer.groups) == (frozenset(), {"eng"})
    only_bad = Acl(public=True, layers=(AclLayer(users=frozenset({"bob\u200b"})),))
    assert not only_bad.grants_anyone  # the emptied layer admits nobody


@pytest.mark.parametrize(
    "acl",
    [
        Acl(public=True, deny_users=frozenset({"mal\u200blory"})),
        Acl(allow_users=frozenset({"alice"}), deny_groups=frozenset({"contrac\u202etors"})),
        Acl(public=True, tenant="ac\u200bme"),
        Acl(public=True, tenant="  "),
    ],
)
def test_a_deny_or_tenant_without_a_canonical_form_shuts_the_acl_to_everyone(acl):
    # Dropping the entry would let in whoever it was meant to keep out; nobody can
    # present it either. So the document is withheld from everyone.
    assert acl == Acl.empty()
    assert not acl.permits(Principal.of("alice"))
    assert not acl.permits(Principal.of("mallory"))


def test_stored_acls_are_read_back_in_canonical_form():
    stored = {
        "allow_groups": ["Staff"],
        "deny_users": ["Mallory"],
        "layers": [{"users": ["BOB"], "groups": []}],
    }
    acl = Acl.from_dict(stored)
    assert acl.to_dict()["deny_users"] == ["mallory"]
    assert not acl.permits(Principal.of("mallory", ["staff"]))
    assert acl.permits(Principal.of("Bob", ["STAFF"]))


def test_acls_with_a_deny_change_fingerprint_so_the_next_ingest_rewrites_them():
    # Before the canonical form, the fingerprint hashed to_dict() alone.
    def old_fingerprint(acl: Acl) -> str:
        blob = json.dumps(acl.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    denied = Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"}))
    plain = Acl(allow_groups=frozenset({"hr"}))
    assert denied.fingerprint() != old_fingerprint(denied)
    assert plain.fingerprint() == old_fingerprint(plain)  # nothing to rewrite

    def entry(fingerprint: str) -> ManifestEntry:
        return ManifestEntry("d", "d.md", "v1", fingerprint, ("d#0",), "indexed", *[None] * 4)

    assert classify("v1", denied.fingerprint(), entry(old_fingerprint(denied))) == ACL_ONLY
    assert classify("v1", plain.fingerprint(), entry(old_fingerprint(plain))) == UNCHANGED


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"match": "hr/**", "deny_users": ["mal\u200blory"]}, r"ACL rule 'hr/\*\*': deny_users"),
        ({"match": "x/*", "allow_groups": ["hr\x00"]}, r"ACL rule 'x/\*': allow_groups"),
        ({"match": "y", "public": True, "tenant": "ac\u202eme"}, r"ACL rule 'y': tenant"),
    ],
)
def test_a_name_without_a_canonical_form_in_trove_yaml_is_a_config_error(tmp_path, rule, message):
    with pytest.raises(ConfigError, match=message):
        hr_policy(tmp_path, rule)


def test_source_names_differing_only_in_case_are_refused(tmp_path):
    # Their tokens ("Wiki:group:x", "wiki:group:x") are one principal once canonical.
    sources = [{"name": "Wiki", "path": "a"}, {"name": "wiki", "path": "b"}]
    with pytest.raises(ConfigError, match="repeated: wiki"):
        settings_from_dict({"sources": sources}, tmp_path)


# ---------------------------------------------------------------- connectors and the directory


def test_connector_principals_are_canonical_and_odd_ones_grant_nothing():
    assert principals.email(" Bob@Example.COM ") == "bob@example.com"
    assert principals.user_token("Wiki", "ACC-1") == "wiki:user:acc-1"
    assert principals.group_token("sp", "ABC-Def") == "sp:group:abc-def"
    assert principals.site_group_token("sp", "SITE", 5) == "sp:sitegroup:site:5"
    assert principals.tenant_token("sp", "Contoso") == "sp:tenant:contoso"
    odd = principals.email("eve\u200b@example.com")  # a listing never stops over it ...
    assert Acl(allow_users=frozenset({odd, "bob@example.com"})).allow_users == {"bob@example.com"}


def test_the_directory_drops_names_without_a_canonical_form(tmp_path):
    d = GroupDirectory.in_state_dir(tmp_path)
    snapshot = GroupSnapshot(
        "wiki",
        {
            "wiki:group:eng": frozenset({"eve\u200b@corp.com", "Ann@Corp.com"}),
            "wiki:group:bad\x00": frozenset({"ann@corp.com"}),
        },
        users=[DirectoryUser("wiki:user:1", frozenset({"ann@corp.com", "ann\u200b@corp.com"}))],
    )
    counts = d.replace_source(snapshot)
    assert (counts.groups, counts.users, counts.memberships) == (1, 1, 1)
    assert d.expand(Principal.of("ANN@corp.com")).groups == {"wiki:group:eng", "wiki:user:1"}
    assert d.expand(Principal.of("eve@corp.com")).groups == frozenset()


def test_a_directory_written_before_the_canonical_form_is_rewritten_in_it(tmp_path):
    path = tmp_path / "groups.sqlite"
    conn = sqlite3.connect(path)  # as the previous release left it
    with conn:
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO memberships VALUES (?, ?, ?)",
            [
                ("Wiki", "Wiki:user:ACC-1", "Wiki:group:HR"),
                ("Wiki", "x\u200b@corp.com", "Wiki:group:HR"),
            ],
        )
        conn.execute("INSERT INTO users VALUES ('Wiki', 'Mallory@Corp.com', 'Wiki:user:ACC-1')")
        conn.execute("INSERT INTO groups VALUES ('Wiki', 'Wiki:group:HR')")
        conn.execute("INSERT INTO sources VALUES ('Wiki', '2024-01-01', 'Wiki:tenant:T', 1, 1, 2)")
    conn.close()
    d = GroupDirectory(path)
    expanded = d.expand(Principal.of("mallory@corp.com"))
    assert expanded.groups == {"wiki:user:acc-1", "wiki:group:hr", "wiki:tenant:t"}
    assert not Acl(public=True, deny_groups=frozenset({"wiki:group:hr"})).permits(expanded)
    assert d.known_groups("Wiki") == {"wiki:group:hr"}
    d.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert conn.execute("SELECT COUNT(*) FROM memberships").fetchone() == (1,)
    conn.close()


# ---------------------------------------------------------------- property: every path agrees

EXAMPLES = settings(max_examples=150, deadline=None)


@EXAMPLES
@given(name=names, data=st.data())
def test_every_spelling_is_the_canonical_name_in_acls_and_layers(name, data):
    canonical = canonical_user(name)
    spelled, other = data.draw(spellings(name)), data.draw(spellings(name))
    group = "wiki:group:" + name
    principal = Principal.of(spelled, [data.draw(spellings(group))])
    assert principal.user == canonical and principal.groups == {canonical_group(group)}
    stranger = Principal.of(name + "x", ["wiki:group:other"])
    for user in (canonical, other):  # the ACL spells the name canonically, or otherwise
        g = data.draw(spellings(group))
        for acl in (
            Acl(public=True, deny_users=frozenset({user})),
            Acl(public=True, deny_groups=frozenset({g})),
            Acl(allow_users=frozenset({user}), deny_groups=frozenset({g})),
        ):
            assert not acl.permits(principal)
        for acl in (
            Acl(allow_users=frozenset({user})),
            Acl(allow_groups=frozenset({g})),
            Acl(public=True, layers=(AclLayer(users=frozenset({user})),)),
            Acl(public=True, layers=(AclLayer(groups=frozenset({g})),)),
        ):
            assert acl.permits(principal)
            assert not acl.permits(stranger)


@EXAMPLES
@given(name=names, data=st.data())
def test_a_spelling_with_a_hidden_character_is_refused_everywhere(name, data):
    bad = data.draw(invalid_spellings(name))
    with pytest.raises(InvalidIdentity):
        Principal.of(bad)
    with pytest.raises(InvalidIdentity):
        Principal.of("alice", [bad])
    assert Acl(allow_users=frozenset({bad})).allow_users == frozenset()
    assert Acl(public=True, deny_users=frozenset({bad})) == Acl.empty()
    assert Acl(public=True, deny_groups=frozenset({bad})) == Acl.empty()
    assert not Acl(allow_users=frozenset({principals.email(bad)})).grants_anyone


@settings(max_examples=40, deadline=None)
@given(name=names, data=st.data())
def test_every_spelling_expands_alike_through_the_directory_and_connector_tokens(name, data):
    member, identity, caller = (data.draw(spellings(name)) for _ in range(3))
    token = principals.user_token("wiki", data.draw(spellings("ID-" + name)))
    assert principals.email(member) == canonical_user(name) == principals.email(caller)
    with tempfile.TemporaryDirectory() as state:
        d = GroupDirectory.in_state_dir(Path(state))
        d.replace_source(
            GroupSnapshot(
                "wiki",
                {"wiki:group:eng": frozenset({member}), "wiki:group:ops": frozenset({token})},
                users=[DirectoryUser(token, frozenset({identity}))],
            )
        )
        expanded = d.expand(Principal.of(caller))
        # An e-mail in the groups claim is not an identity: it expands to nothing.
        claimed = d.expand(Principal.of("eve@corp.example", [member]))
        d.close()
    canonical_token = canonical_group("wiki:user:id-" + name)
    assert expanded.groups == {"wiki:group:eng", "wiki:group:ops", canonical_token}
    assert not Acl(public=True, deny_groups=frozenset({"WIKI:GROUP:ENG"})).permits(expanded)
    assert Acl(allow_groups=frozenset({token})).permits(expanded)
    assert claimed.groups == {canonical_user(name)}


def test_spellings_of_one_caller_share_one_rate_limit(tmp_path):
    from retrieval.service import RateLimitedError
    from tests.retrieval.api.helpers import make_service

    service = make_service(tmp_path, rate_limit_per_minute=2)
    try:
        service.check_rate(Principal.of("Alice"))
        service.check_rate(Principal.of("ALICE "))
        with pytest.raises(RateLimitedError):
            service.check_rate(Principal.of("ａｌｉｃｅ"))
        service.check_rate(Principal.of("bob"))
    finally:
        service.close()
