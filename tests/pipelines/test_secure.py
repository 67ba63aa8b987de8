from core.acl import Acl
from core.acl_config import SourceAclConfig
from core.acl_policy import AclPolicy


def policy(**kw) -> AclPolicy:
    return AclPolicy.from_config(SourceAclConfig.model_validate(kw))


RULES = [
    {"match": "security/**", "allow_groups": ["security"]},
    {"match": "hr/**", "allow_groups": ["hr"], "deny_users": ["mallory"]},
    {"match": "**/*.md", "allow_groups": ["docs"]},
]


def test_first_matching_rule_wins():
    p = policy(default={"allow_groups": ["all-staff"]}, rules=RULES)
    assert p.acl_for_path("security/plan.md").allow_groups == {"security"}
    hr = p.acl_for_path("hr/a/b.docx")
    assert hr.allow_groups == {"hr"} and hr.deny_users == {"mallory"}
    assert p.acl_for_path("notes/x.md").allow_groups == {"docs"}


def test_unmatched_documents_fall_to_default():
    p = policy(default={"allow_groups": ["all-staff"]}, rules=RULES)
    assert p.acl_for_path("misc/budget.xlsx").allow_groups == {"all-staff"}


def test_without_default_unmatched_documents_fail_closed():
    p = policy(rules=RULES)
    acl = p.acl_for_path("misc/budget.xlsx")
    assert acl == Acl.empty() and not acl.grants_anyone


def test_native_permissions_apply_when_no_rule_matches():
    native = Acl(allow_users=frozenset({"ann"}))
    assert policy(rules=RULES).acl_for_path("misc/x.pdf", native) == native
    assert policy(rules=RULES).acl_for_path("hr/x.pdf", native).allow_groups == {"hr"}
