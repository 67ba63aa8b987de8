"""A glob's `*`/`**` skip dot-segments; a rule or an exclude must still cover them.

`hr/**` is written to mean everything under `hr/`: a document at `hr/.pay.md`
that fell through to a broader default ACL, or an `exclude: internal/**` that let
`internal/.x` through, would widen who reads it.
"""

from __future__ import annotations

from core.acl import Acl, Principal
from core.acl_config import SourceAclConfig
from core.acl_policy import AclPolicy
from core.paths import EXACT_ONLY, RULE_READINGS, selected

EVERYONE = {"public": True}
HR = {"allow_groups": ["hr"]}


def _policy(rules: list[dict], default: dict | None) -> AclPolicy:
    return AclPolicy.from_config(
        SourceAclConfig.model_validate({"rules": rules, "default": default})
    )


def _readers(acl: Acl) -> set[str]:
    people = {
        "hr": Principal.of("hana", ["hr"]),
        "anyone": Principal.of("olga", []),
    }
    return {name for name, who in people.items() if acl.permits(who)}


def test_a_rule_under_a_folder_governs_its_dot_files():
    policy = _policy([{"match": "hr/**", **HR}], default=EVERYONE)
    assert _readers(policy.acl_for_path("hr/pay.md")) == {"hr"}
    assert _readers(policy.acl_for_path("hr/.pay.md")) == {"hr"}
    assert _readers(policy.acl_for_path("hr/.private/pay.md")) == {"hr"}


def test_a_dot_file_never_gains_readers_from_a_broader_rule():
    # `public/**` grants everyone, the default nobody: a dot-file under public gets
    # what both readings allow (nobody), never more than it had.
    policy = _policy([{"match": "public/**", **EVERYONE}], default=None)
    assert _readers(policy.acl_for_path("public/a.md")) == {"hr", "anyone"}
    assert _readers(policy.acl_for_path("public/.draft.md")) == set()


def test_exclude_drops_dot_segments_under_every_reading_set():
    for readings in (RULE_READINGS, EXACT_ONLY):
        assert not selected(("internal/.x.md",), ["**"], ["internal/**"], readings)
        assert not selected(("internal/.cache/x.md",), ["**"], ["internal/**"], readings)
        assert selected(("public/x.md",), ["**"], ["internal/**"], readings)


def test_include_is_not_widened_to_dot_segments():
    # Selecting dot-files that `include` never matched would add documents.
    assert not selected(("docs/.x.md",), ["docs/**"], [], RULE_READINGS)
    assert selected(("docs/x.md",), ["docs/**"], [], RULE_READINGS)
