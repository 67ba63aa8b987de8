"""URLs in messages keep where they point and lose what may carry a credential.

A password written into a URL (``https://svc:password@host/``, a proxy or a
start URL) was kept by ``redact_url``, which dropped only the query string.
"""

from __future__ import annotations

import httpx
import pytest

from connectors.common import redact_url
from connectors.http import HttpClient, SourceUnavailable
from core.retry import RetryPolicy


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://svc:S3CR3T@wiki.test/wiki/api/v2/spaces", "https://wiki.test/wiki/api/v2/spaces"),
        ("https://S3CR3T@wiki.test/x", "https://wiki.test/x"),  # a token as the user name
        # An `@` in the password: the user-info ends at the authority's last `@`.
        ("https://svc:S3@CR3T@wiki.test:8443/a", "https://wiki.test:8443/a"),
        ("https://svc:S3CR3T@wiki.test", "https://wiki.test"),
        ("//svc:S3CR3T@wiki.test/a", "//wiki.test/a"),  # scheme-relative
        ("https://svc:pw@wiki.test/a?sig=S3CR3T#frag", "https://wiki.test/a"),
        ("https://wiki.test/a#access_token=S3CR3T", "https://wiki.test/a"),  # a fragment too
    ],
)
def test_user_info_query_and_fragment_are_dropped(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "S3CR3T" not in redact_url(url)
    assert redact_url(httpx.URL(url)) == expected  # as the HTTP client passes it


@pytest.mark.parametrize(
    "url",
    [
        "https://wiki.test/people/alice@example.com/profile",  # an `@` in the path stays
        "https://wiki.test:8443/a/b",
        "/wiki/rest/api/content/search",  # a site-relative link
    ],
)
def test_a_url_without_credentials_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_an_http_error_never_names_the_password_of_its_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    http = HttpClient(
        httpx.Client(transport=httpx.MockTransport(refuse)),
        RetryPolicy(max_attempts=2),
        sleep=lambda _: None,
    )
    try:
        with pytest.raises(SourceUnavailable) as raised:
            http.get("https://svc:S3CR3T@wiki.test/wiki/api/v2/spaces")
    finally:
        http.close()
    message = str(raised.value)
    assert "wiki.test/wiki/api/v2/spaces" in message and "S3CR3T" not in message
