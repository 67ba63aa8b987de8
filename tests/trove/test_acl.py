import pytest

from trove.acl import Acl, Principal

ALICE = Principal.of("alice", ["eng", "all-staff"])
MALLORY = Principal.of("mallory", ["hr"])
ACME_BOB = Principal.of("bob", ["eng"], tenant="acme")


@pytest.mark.parametrize(
    ("acl", "principal", "allowed"),
    [
        (Acl(allow_users=frozenset({"alice"})), ALICE, True),
        (Acl(allow_groups=frozenset({"eng"})), ALICE, True),
        (Acl(allow_groups=frozenset({"hr"})), ALICE, False),
        (Acl(public=True), ALICE, True),
        (Acl(public=True, deny_users=frozenset({"alice"})), ALICE, False),
        (Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"})), MALLORY, False),
        (Acl(allow_users=frozenset({"alice"}), deny_groups=frozenset({"eng"})), ALICE, False),
        (Acl(allow_groups=frozenset({"eng"}), tenant="acme"), ACME_BOB, True),
        (Acl(allow_groups=frozenset({"eng"}), tenant="acme"), ALICE, False),
        (Acl(allow_groups=frozenset({"eng"}), tenant="globex"), ACME_BOB, False),
        (Acl(allow_groups=frozenset({"eng"})), ACME_BOB, True),
        (Acl.empty(), ALICE, False),
    ],
)
def test_permits_follows_the_documented_semantics(acl, principal, allowed):
    assert acl.permits(principal) is allowed


def test_empty_acl_grants_nobody():
    assert not Acl.empty().grants_anyone
    assert Acl(public=True).grants_anyone
    assert not Acl(deny_users=frozenset({"x"})).grants_anyone


def test_round_trip_and_fingerprint_stability():
    acl = Acl(allow_groups=frozenset({"b", "a"}), deny_users=frozenset({"m"}), tenant="t")
    again = Acl.from_dict(acl.to_dict())
    assert again == acl
    assert again.fingerprint() == acl.fingerprint()
    assert Acl(allow_groups=frozenset({"a"})).fingerprint() != acl.fingerprint()
    assert Acl.from_dict(None) == Acl.empty()


def test_names_are_trimmed_and_blank_names_dropped():
    acl = Acl(allow_groups=frozenset({" hr ", "", "  "}))
    assert acl.allow_groups == {"hr"}
    assert Principal.of("u", ["", " eng "]).groups == {"eng"}


def test_principal_needs_a_user():
    with pytest.raises(ValueError, match="non-empty user"):
        Principal.of("  ")
