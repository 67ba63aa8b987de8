import pytest

from core.acl import Acl, Principal

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


def test_restriction_layers_are_an_and_of_ors_even_with_mixed_users_and_groups():
    from core.acl import AclLayer

    # Space readable by `staff`; the page is restricted to group A; its parent to bob.
    acl = Acl(
        allow_groups=frozenset({"staff"}),
        layers=(AclLayer(groups=frozenset({"a"})), AclLayer(users=frozenset({"bob"}))),
    )
    assert acl.permits(Principal.of("bob", ["staff", "a"]))
    assert not acl.permits(Principal.of("alice", ["staff", "a"]))  # in A, but not bob
    assert not acl.permits(Principal.of("bob", ["staff"]))  # bob, but not in A
    assert not acl.permits(Principal.of("bob", ["a"]))  # no space permission
    assert acl.grants_anyone
    nobody = Acl(public=True, layers=(AclLayer(),))
    assert not nobody.grants_anyone
    assert not nobody.permits(Principal.of("bob", ["a"]))


def test_layers_are_order_free_and_leave_old_fingerprints_alone():
    from core.acl import AclLayer

    one, two = AclLayer(users=frozenset({"bob"})), AclLayer(groups=frozenset({"a"}))
    assert Acl(public=True, layers=(one, two)) == Acl(public=True, layers=(two, one, one))
    plain = Acl(allow_users=frozenset({"x"}))
    assert "layers" not in plain.to_dict()
    assert Acl.from_dict(plain.to_dict()).fingerprint() == plain.fingerprint()
    layered = Acl(allow_users=frozenset({"x"}), layers=(one,))
    assert layered.fingerprint() != plain.fingerprint()
    assert Acl.from_dict(layered.to_dict()) == layered
