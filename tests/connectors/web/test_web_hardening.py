"""URL normalisation, fail-closed rule matching, canonicals and address pinning (issue 16)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.http import HttpClient
from connectors.web.connector import WebConnector
from connectors.web.fetch import Fetcher, OffHost
from connectors.web.guard import AddressGuard, BlockedAddress, PinnedTransport
from connectors.web.scope import UrlRules, at_least_as_strict, server_readings
from connectors.web.state import PageState, dump_state
from connectors.web.urls import normalise, path_of
from core.acl import Acl, AclLayer, Principal
from core.acl_config import SourceAclConfig
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from tests.connectors.web.fake import make_source_config

RULES = [
    {"match": "/internal/**", "allow_groups": ["board"]},
    {"match": "/hr/**", "allow_groups": ["hr"]},
    {"match": "**/secret*", "allow_groups": ["security"]},
]
PRINCIPALS = [
    Principal.of("anyone@example.com"),
    *(Principal.of(f"{g}@example.com", [g]) for g in ("board", "hr", "security")),
    Principal.of("both@example.com", ["board", "security"]),
]


def url_rules(*, case_insensitive: bool = False, rules=RULES, **globs) -> UrlRules:
    return UrlRules(
        include=globs.get("include", ["**/*"]),
        exclude=globs.get("exclude", []),
        policy=AclPolicy.from_config(SourceAclConfig.model_validate({"rules": rules})),
        native=Acl.public_acl(),
        case_insensitive=case_insensitive,
    )


def readers(acl: Acl | None) -> set[str]:
    return {p.user for p in PRINCIPALS if acl is not None and acl.permits(p)}


# -- normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h.example/%69nternal/x", "http://h.example/internal/x"),
        ("http://h.example/a/%2e%2E/internal/x", "http://h.example/internal/x"),
        ("http://h.example/a/.%2e/b/%2E/c", "http://h.example/b/c"),
        ("http://h.example/a%2fb%3b%7E", "http://h.example/a%2Fb%3B~"),
        ("http://h.example/a\\..\\internal\\x", "http://h.example/internal/x"),
        ("http://h.example/a/..", "http://h.example/"),
        ("http://h.example/caf\u00e9", "http://h.example/caf%C3%A9"),
        ("http://h.example/100%", "http://h.example/100%25"),
        ("http://h.example/?q=%7e&r=a b", "http://h.example/?q=~&r=a%20b"),
        ("http://Fa\u00df.EXAMPLE./", "http://xn--fa-hia.example/"),
        ("http://ex%61mple.com/", "http://example.com/"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://0x7f.0.0.1/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://[::FFFF:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
        ("http://\u2603.net/", None),  # IDNA 2008 refuses it, so does httpx
        ("http://[fe80::1%25eth0]/", None),  # a zone id names one of our interfaces
        ("http://256.1.1.1/", None),
        ("http://a..b/", None),
        ("http://evil.example\\@good.example/", "http://evil.example/@good.example/"),
    ],
)
def test_normalise_rfc3986_and_the_clients_host(url, expected):
    assert normalise(url) == expected


_PATH_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40
)


@given(_PATH_TEXT)
@settings(max_examples=200, deadline=None)
def test_normalise_is_idempotent(raw):
    once = normalise("http://h.example/" + raw)
    assert once is None or normalise(once) == once


# -- rule matching under every server reading ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/docs/..%2Finternal/x",  # servers that decode %2F
        "/docs/..%252Finternal/x",  # ... twice
        "/internal;jsessionid=1/x",  # Tomcat/Spring path parameters
        "//internal/x",  # merged slashes
        "/docs/..%5Cinternal/x",  # IIS: %5C is a backslash is a slash
    ],
)
def test_a_reading_under_a_rule_makes_the_rule_apply(path):
    rules = url_rules()
    verdict = rules.verdict(path)
    assert readers(verdict.acl) == {"board@example.com", "both@example.com"}
    # The pipeline, given the path the document reports, applies that same ACL.
    assert rules.policy.acl_for_path(verdict.path, Acl.public_acl()) == verdict.acl


def test_readings_that_rules_give_incomparable_permissions_are_refused():
    rules = url_rules(
        rules=[
            {"match": "/blog/**", "allow_groups": ["marketing"]},
            {"match": "/internal/**", "allow_groups": ["board"]},
        ]
    )
    tricky = "/blog/x%2F..%2F..%2Finternal/y"  # /blog/… as written, /internal/y decoded
    verdict = rules.verdict(tricky)
    assert verdict.path is None and "/internal/y" in verdict.reason
    assert not rules.admits(tricky)
    assert rules.verdict("/blog/post").path == "/blog/post"


def test_include_and_exclude_hold_under_every_reading():
    rules = url_rules(include=["/docs/**"], exclude=["**/drafts/**"])
    assert rules.included("/docs/a")
    assert not rules.included("/docs/..%2Finternal/a")  # decoded: not under /docs
    assert not rules.included("/docs/drafts;v=1/a")  # parameters stripped: excluded
    assert rules.included("/docs/Drafts/a")  # case matters on this source
    insensitive = url_rules(case_insensitive=True, include=["/docs/**"], exclude=["**/drafts/**"])
    assert not insensitive.included("/docs/Drafts/a")


def test_case_insensitive_paths_match_rules_in_lower_case():
    assert "/internal/x" in server_readings("/Internal/X", case_insensitive=True)
    assert "/internal/x" in server_readings("/INTERNAL./x", case_insensitive=True)
    sensitive, insensitive = url_rules(), url_rules(case_insensitive=True)
    assert readers(insensitive.verdict("/INTERNAL/Report").acl) == {
        "board@example.com",
        "both@example.com",
    }
    assert sensitive.verdict("/plain/Page").path == "/plain/Page"  # case kept when it matters


def test_at_least_as_strict():
    public, board = Acl.public_acl(), Acl(allow_groups=frozenset({"board"}))
    both = Acl(
        allow_groups=frozenset({"security"}), layers=(AclLayer(groups=frozenset({"board"})),)
    )
    assert at_least_as_strict(board, public) and not at_least_as_strict(public, board)
    assert at_least_as_strict(both, board) and at_least_as_strict(Acl.empty(), board)
    assert not at_least_as_strict(Acl(allow_groups=frozenset({"hr"})), board)
    assert not at_least_as_strict(
        Acl(allow_groups=frozenset({"board"}), tenant=None),
        Acl(allow_groups=frozenset({"board"}), tenant="acme"),
    )


_NAMES = st.sampled_from(["internal", "hr", "docs", "public", "secret-plan", "a", "b-1", "x_y"])
_SEGMENT = st.one_of(_NAMES, st.from_regex(r"[a-z0-9_-]{1,6}(\.[a-z]{2,4})?", fullmatch=True))


def _encode_some(draw, text: str, case_changes: bool) -> str:
    out = []
    for char in text:
        if case_changes and char.isalpha() and draw(st.booleans()):
            char = char.upper()
        if draw(st.integers(0, 3)) == 0:
            hex_ = f"{ord(char):02x}"
            char = "%" + (hex_.upper() if draw(st.booleans()) else hex_)
        out.append(char)
    return "".join(out)


@st.composite
def spellings(draw, *, reserved: bool, case_changes: bool = False):
    """A plain path and another spelling of it that servers treat as the same resource.

    Without ``reserved``: percent-encoded unreserved characters, hex case and dot
    segments (RFC 3986 equivalents). With it: also ``%2F`` and ``\\`` for ``/``,
    ``//`` runs and ``;param`` path parameters (equivalent to some servers).
    """
    segments = draw(st.lists(_SEGMENT, min_size=1, max_size=4))
    plain = "/" + "/".join(segments)
    spelled = ""
    for n, segment in enumerate(segments):
        separators = ["/"] + (["//", "\\", "%2F", "%2f"] if reserved else [])
        separator = draw(st.sampled_from(separators))
        spelled += separator if n or separator.startswith(("/", "\\")) else "/" + separator
        # A dot segment after an encoded slash would step over it before the server
        # decodes it: that names another resource (the one the crawler then fetches).
        if not separator.startswith("%"):
            detour = draw(st.sampled_from(["", "./", "%2e/", "{name}/../", "{name}/%2E%2e/"]))
            spelled += detour.format(name=draw(_NAMES)) if detour else ""
        spelled += _encode_some(draw, segment, case_changes)
        if reserved and draw(st.booleans()):
            spelled += ";" + draw(st.sampled_from(["p=1", "jsessionid=x", "v"]))
    return plain, spelled


@given(spellings(reserved=False))
@settings(max_examples=300, deadline=None)
def test_rfc_equivalent_spellings_get_the_same_rule_outcome(pair):
    plain, spelled = pair
    rules = url_rules()
    url = normalise("http://h.example" + spelled)
    assert url is not None and path_of(url) == plain
    assert rules.verdict(path_of(url)).acl == rules.verdict(plain).acl


@given(spellings(reserved=False, case_changes=True))
@settings(max_examples=200, deadline=None)
def test_case_variants_get_the_same_outcome_on_case_insensitive_sources(pair):
    plain, spelled = pair
    rules = url_rules(case_insensitive=True)
    url = normalise("http://h.example" + spelled)
    assert url is not None
    assert rules.verdict(path_of(url)).acl == rules.verdict(plain).acl


@given(spellings(reserved=True))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_server_equivalent_spellings_never_widen_who_reads(pair):
    plain, spelled = pair
    rules = url_rules()
    url = normalise("http://h.example" + spelled)
    assert url is not None
    verdict, expected = rules.verdict(path_of(url)), rules.verdict(plain)
    # Refused (nobody), or the plain path's ACL, or one stricter: never a wider one.
    assert readers(verdict.acl) <= readers(expected.acl)
    if verdict.path is not None:  # what the pipeline will apply to the reported path
        assert rules.policy.acl_for_path(verdict.path, Acl.public_acl()) == verdict.acl


# -- canonicals -----------------------------------------------------------------------


def docs(connector, cursor=None) -> dict:
    return {d.doc_id: d for b in connector.changes(cursor) for d in b.documents}


def test_a_canonical_with_the_same_acl_still_de_duplicates(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/docs/a?ref=nav"])
    fake_web.html("/docs/a?ref=nav", "A", "Same page.", canonical="/docs/a")
    fake_web.html("/docs/a", "A", "Same page.")
    connector = web_connector()
    found = docs(connector)
    assert set(found) == {f"site:{fake_web.url}/", f"site:{fake_web.url}/docs/a"}
    stamps = {s.doc_id for s in connector.list_ids()}
    assert stamps == set(found)  # the duplicate is not listed either


def test_a_duplicate_whose_canonical_yields_nothing_is_indexed_itself(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/print/a", "/p", "/q"])
    fake_web.html("/print/a", "A (print)", "Only copy.", canonical="/docs/a")  # 404
    fake_web.html("/p", "P", "Loop.", canonical="/q")
    fake_web.html("/q", "Q", "Loop.", canonical="/p")
    connector = web_connector()
    found = docs(connector)
    print_a = found[f"site:{fake_web.url}/print/a"]
    assert print_a.content is None and print_a.path == "/print/a"  # the pipeline fetches it
    assert len({f"site:{fake_web.url}/p", f"site:{fake_web.url}/q"} & set(found)) == 1
    fetched = connector.fetch(f"site:{fake_web.url}/print/a")
    assert fetched.content == fake_web.pages["/print/a"].body


def test_a_canonical_with_other_permissions_is_ignored_also_after_a_304(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/internal/m"])
    fake_web.html("/internal/m", "M", "Board only.", canonical="/m")
    fake_web.html("/m", "M", "Public copy.")
    source = make_source_config(fake_web, "site", acl_rules=RULES[:1])
    connector = web_connector(source=source)
    batches = list(connector.changes(None))
    second = docs(connector, batches[-1].cursor)  # /internal/m answers 304 now
    internal = second[f"site:{fake_web.url}/internal/m"]
    assert internal.content is None and internal.path == "/internal/m"


# -- fetching: hosts, redirects, pinning ----------------------------------------------


def test_the_fetcher_requests_nothing_off_the_allowed_hosts(fake_web):
    fake_web.redirect("/away", f"{fake_web.other_host_url}/x")
    http = HttpClient(httpx.Client(), sleep=lambda _: None)
    fetcher = Fetcher(
        http, AddressGuard(allow_private=True), "t", allowed_hosts=frozenset({"127.0.0.1"})
    )
    with pytest.raises(OffHost):
        fetcher.get(f"{fake_web.other_host_url}/x")
    away = fetcher.get(f"{fake_web.url}/away")  # no `follow` test: the host check still holds
    assert away.status == 301 and away.refused_redirect == f"{fake_web.other_host_url}/x"
    assert not [r for r in fake_web.requests if r.host == "localhost"]
    http.close()


def rebinding_resolver(*answers: str) -> tuple[Callable, list[str]]:
    """Answers ``answers[0]`` first, then ``answers[1]`` and so on (the last one repeats)."""
    calls: list[str] = []

    def resolve(host, port, family=0, type=0, *_):
        calls.append(host)
        ip = answers[min(len(calls), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))]

    return resolve, calls


def only_loopback(address: str) -> bool:
    """The test's stand-in for "public": our fake server's address and nothing else."""
    return address == "127.0.0.1"


def test_connections_go_to_the_checked_address_and_never_resolve_again(fake_web):
    fake_web.html("/x", "X", "Served from the checked address.")
    port = fake_web.url.rsplit(":", 1)[1]
    resolve, calls = rebinding_resolver("127.0.0.1", "10.0.0.1")
    guard = AddressGuard(resolve=resolve, allowed=only_loopback)
    with httpx.Client(transport=PinnedTransport(guard)) as client:
        for _ in range(3):  # a fresh connection each time: each one is pinned
            response = client.get(f"http://rebind.test:{port}/x", headers={"Connection": "close"})
            assert response.status_code == 200 and b"checked address" in response.content
    assert calls == ["rebind.test"]  # resolved once; "rebind.test" is unknown to the OS
    assert {r.host for r in fake_web.requests} == {"rebind.test"}  # Host header kept

    guard.forget()  # a new run resolves again, and checks the new answer
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.1"):
        guard.check(f"http://rebind.test:{port}/x")


def test_a_refused_host_is_never_connected_to(fake_web):
    port = fake_web.url.rsplit(":", 1)[1]
    resolve, _ = rebinding_resolver("10.0.0.1", "127.0.0.1")
    guard = AddressGuard(resolve=resolve, allowed=only_loopback)
    with httpx.Client(transport=PinnedTransport(guard)) as client:
        for _ in range(2):
            with pytest.raises(BlockedAddress):
                client.get(f"http://rebind.test:{port}/x")
    assert fake_web.requests == []


def test_the_connector_crawls_through_its_pinned_client(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/a"])
    fake_web.html("/a", "A", "Reached over the pinned connection.")
    port = fake_web.url.rsplit(":", 1)[1]
    connector = web_connector(
        allow_private_addresses=False, start_urls=[f"http://intranet.test:{port}/"]
    )
    resolve, calls = rebinding_resolver("127.0.0.1", "169.254.169.254")
    connector.guard.resolve, connector.guard.allowed = resolve, only_loopback
    assert set(docs(connector)) == {
        f"site:http://intranet.test:{port}/",
        f"site:http://intranet.test:{port}/a",
    }
    assert calls == ["intranet.test"]
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254"):
        docs(connector)  # the next run resolves again and refuses the new answer


def test_a_callers_client_cannot_bypass_pinning(fake_web):
    source = SourceConfig.model_validate(
        make_source_config(fake_web, "site", allow_private_addresses=False)
    )
    with pytest.raises(ValueError, match="pinned"):
        WebConnector(source.scope(), source.web, http=httpx.Client())


def test_case_insensitive_sources_need_lower_case_globs(fake_web, web_connector):
    with pytest.raises(ValueError, match="lower case"):
        web_connector(
            case_insensitive_paths=True, acl_rules=[{"match": "/Internal/**", "public": False}]
        )


# -- credentials on redirects (connectors.http) ---------------------------------------


def test_credentials_are_not_forwarded_on_a_cross_host_redirect():
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "wiki.example":
            return httpx.Response(302, headers={"Location": "https://files.example/blob"})
        return httpx.Response(200, content=b"blob")

    http = HttpClient(httpx.Client(transport=httpx.MockTransport(handler)), sleep=lambda _: None)
    response = http.get(
        "https://wiki.example/download", auth=httpx.BasicAuth("me", "token"), follow_redirects=True
    )
    assert response.content == b"blob"
    assert seen[0][1] is not None and seen[1] == ("files.example", None)


def test_an_old_cursors_spelling_is_re_keyed_and_its_old_id_deleted(fake_web, web_connector):
    fake_web.html("/", "Home", "Start.", links=["/internal/x"])
    fake_web.html("/internal/x", "X", "Board only.")
    old_url = f"{fake_web.url}/%69nternal/x"  # how the old normaliser spelled it
    state = {
        old_url: PageState(doc_id=f"site:{old_url}", version="sha256:old", etag='"stale"'),
    }
    batches = list(web_connector().changes(dump_state(state)))
    assert f"site:{old_url}" in batches[-1].deleted
    assert fake_web.requested("/internal/x")[-1].headers.get("If-None-Match") == '"stale"'
