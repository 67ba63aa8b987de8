"""Path spelling and rule matching: another way of writing a path never widens who reads it.

``handbook/../hr/x``, ``hr//x``, ``hr/./x``, a folder name in another Unicode
normal form, ``HR/`` against a rule on ``hr/**``: every reading of the path is
held to the rules, and the document gets what all of them allow.
"""

from __future__ import annotations

import itertools
import os
import unicodedata

import pytest
from wcmatch import glob as wglob

from connectors.filesystem import FilesystemConnector
from core.acl import Acl, AclLayer, Principal
from core.acl_config import SourceAclConfig
from core.acl_policy import AclPolicy, intersect
from core.paths import canonical_path, matches, selected
from pipelines.config import SourceConfig

RULES = {
    "default": {"allow_groups": ["all-staff"]},
    "rules": [
        {"match": "hr/**", "allow_groups": ["hr"], "deny_users": ["mallory"]},
        {"match": "Gehälter/**", "allow_groups": ["hr"]},
        {"match": "handbook/**", "allow_groups": ["all-staff"]},
        {"match": "public/**", "public": True},
    ],
}
SAM = Principal.of("sam", ["all-staff"])
MALLORY = Principal.of("mallory", ["all-staff", "hr"])
DANA = Principal.of("dana", ["all-staff", "hr"])
POLICY = AclPolicy.from_config(SourceAclConfig.model_validate(RULES))
NFD = unicodedata.normalize("NFD", "Gehälter")


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("hr/x", "hr/x"),
        ("hr//x", "hr/x"),
        ("hr/./x", "hr/x"),
        ("handbook/../hr/x", "hr/x"),
        ("../../hr/x", "hr/x"),
        ("/docs//a/", "/docs/a/"),
        (f"{NFD}/x", "Gehälter/x"),
    ],
)
def test_canonical_path_is_the_place_a_path_names(path, canonical):
    assert canonical_path(path) == canonical


def test_compiled_matching_agrees_with_wcmatch_globmatch():
    flags = wglob.GLOBSTAR | wglob.NEGATE | wglob.BRACE
    patterns = ["**/*", "hr/**", "*.md", "{a,b}/*.txt", "docs/**/x-*", "!hr/**", "**/.hidden"]
    paths = ["a.md", "hr/x", "hr/a/b.pdf", "a/c.txt", "c/c.txt", "docs/1/2/x-3", ".hidden/a"]
    for pattern, path in itertools.product(patterns, paths):
        assert matches(path, [pattern]) == wglob.globmatch(path, pattern, flags=flags)


@pytest.mark.parametrize(
    "path", ["handbook/../hr/x.xlsx", "hr//x.xlsx", "hr/./x.xlsx", "HR/x.xlsx", "Hr/x.xlsx"]
)
def test_another_spelling_of_hr_is_held_to_the_hr_rule(path):
    acl = POLICY.acl_for_path(path)
    assert acl.permits(DANA)
    assert not acl.permits(SAM) and not acl.permits(MALLORY)


def test_another_unicode_normal_form_is_held_to_the_rule():
    acl = POLICY.acl_for_path(f"{NFD}/2024.xlsx")
    assert acl.permits(DANA) and not acl.permits(SAM)


def test_another_spelling_never_widens_a_grant():
    # `public/**` matches ignoring case, but the path as written falls to default:
    # the document gets both, so it is not public.
    acl = POLICY.acl_for_path("PUBLIC/notes.md")
    assert not acl.public and acl.permits(SAM)
    assert not acl.permits(Principal.of("guest"))


def test_plain_paths_keep_exactly_their_rule_acl():
    for path, rule in (("hr/a.xlsx", 0), ("handbook/a.md", 2), ("public/a.md", 3)):
        assert POLICY.acl_for_path(path) == POLICY.rules[rule][1]
    assert POLICY.acl_for_path("misc/a.md") == POLICY.default


ACLS = [
    Acl.empty(),
    Acl(allow_groups=frozenset({"hr"}), deny_users=frozenset({"mallory"})),
    Acl(allow_groups=frozenset({"all-staff"})),
    Acl.public_acl(),
    Acl(allow_users=frozenset({"sam"}), tenant="acme"),
    Acl(allow_groups=frozenset({"all-staff"}), layers=(AclLayer(users=frozenset({"dana"})),)),
    Acl(public=True, deny_groups=frozenset({"hr"})),
]
PRINCIPALS = [
    SAM,
    MALLORY,
    DANA,
    Principal.of("guest"),
    Principal.of("sam", ["all-staff"], tenant="acme"),
]


def test_intersect_admits_exactly_whom_both_admit():
    for a, b in itertools.product(ACLS, ACLS):
        both = intersect(a, b)
        for p in PRINCIPALS:
            assert both.permits(p) == (a.permits(p) and b.permits(p)), (a, b, p)
        assert both.grants_anyone or not any(both.permits(p) for p in PRINCIPALS)


def test_selected_holds_every_reading_to_include_and_exclude():
    assert selected(["docs/hr/x"], ["**/*"], [])
    for dodge in ("docs/hr//x", "docs/hr/./x", "docs/a/../hr/x", "docs/HR/x"):
        assert not selected([dodge], ["**/*"], ["docs/hr/**"]), dodge
    assert not selected(["docs/a/../hr/x"], ["docs/a/**"], [])  # the place is not included
    assert not selected(["handbook/x", "hr/x"], ["**/*"], ["hr/**"])  # either path excluded


def test_filesystem_folder_in_another_normal_form_or_case_gets_the_rule(tmp_path):
    (tmp_path / NFD).mkdir()
    (tmp_path / NFD / "2024.xlsx").write_text("bands")
    (tmp_path / "HR").mkdir()
    (tmp_path / "HR" / "review.md").write_text("review")
    if len(os.listdir(tmp_path)) != 2:
        pytest.skip("this filesystem folds names that differ only in case or normal form")
    config = SourceConfig.model_validate({"name": "docs", "path": str(tmp_path), "acl": RULES})
    scan = FilesystemConnector(config.scope()).scan()
    policy = AclPolicy.from_config(config.acl)
    for doc in scan.documents:
        acl = policy.acl_for(doc)
        assert acl.permits(DANA) and not acl.permits(SAM), doc.path
