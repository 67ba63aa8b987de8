"""``type: sharepoint`` settings.

Authentication is app-only (client credentials) against Entra ID:

* ``client_secret`` is enough for Microsoft Graph (drives, delta, permissions,
  groups, users);
* SharePoint REST (``{site}/_api/...``, needed to expand *site groups*) refuses
  app-only tokens obtained with a secret ("Unsupported app only token"), so
  ``client_certificate`` (a PEM holding the private key and its certificate) is
  the credential to use when ``site_groups`` is on.

Sign-in is msal's client-credentials flow against ``authority``. For an
authority msal does not know (a sovereign-cloud proxy, a test double on
loopback) ``instance_discovery: false`` skips msal's instance discovery call to
login.microsoftonline.com, and ``authority_ca_bundle`` (a PEM of CA
certificates) is what msal trusts for the authority's TLS certificate.

``token_url`` replaces msal with a plain OAuth 2.0 client-credentials POST to
that URL. It exists for test doubles and token proxies (msal only accepts
``https`` authorities and fetches OpenID metadata first); it accepts a secret
only, and only over https or to a loopback address, so a secret never travels
in clear text across a network.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from connectors.credentials import Secret
from core.config import StrictModel

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_secure_url(url: str) -> bool:
    """``https``, or ``http`` to this machine (test doubles): where a bearer token may go."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


class SharePointConfig(StrictModel):
    tenant_id: str
    client_id: str
    client_secret: Secret | None = None
    # PEM with the private key and the certificate (msal derives the thumbprint).
    client_certificate: Secret | None = None
    authority: str = "https://login.microsoftonline.com"
    token_url: str | None = None  # see the module docstring; unset in production
    graph_url: str = "https://graph.microsoft.com/v1.0"
    # Sites as `host:/sites/path` (every document library of each), and/or drive ids.
    sites: list[str] = Field(default_factory=list)
    drives: list[str] = Field(default_factory=list)
    # Entra group ids whose memberships are always synced, besides those the
    # items' permissions name.
    groups: list[str] = Field(default_factory=list)
    # Expand SharePoint site groups (Owners/Members/Visitors...) through
    # SharePoint REST; off = site-group grants admit nobody (fail closed).
    site_groups: bool = True
    # msal: skip instance discovery (only for an authority msal cannot discover),
    # and a CA bundle to trust for the authority's certificate.
    instance_discovery: bool = True
    authority_ca_bundle: str | None = None
    # Sharing links ("Anyone", "People in your organization"). Microsoft: such a
    # link does not make the item searchable by everyone; a person must redeem it,
    # and the redeemers are listed on the link (grantedToIdentitiesV2). Default:
    # grant only them. `public` / `tenant` widen a link to everyone / every member
    # of the tenant (an explicit opt-in); `ignore` grants nothing for such links.
    anonymous_links: Literal["redeemers", "public", "ignore"] = "redeemers"
    organization_links: Literal["redeemers", "tenant", "ignore"] = "redeemers"
    # Item permissions read by the group sync are reused by the ingest that follows
    # (and a run's listing by its downloads) for this many seconds, so one run reads
    # each item's permissions once. 0: always read again.
    shared_permission_reads_s: int = Field(default=300, ge=0)
    page_size: int = Field(default=200, ge=1, le=999)
    # Item permissions are read 1..20 at a time through Graph JSON batching.
    permission_batch_size: int = Field(default=20, ge=1, le=20)

    @field_validator("graph_url", "authority")
    @classmethod
    def _secure(cls, value: str) -> str:
        value = value.rstrip("/")
        if not is_secure_url(value):
            raise ValueError(f"{value!r} must be an https URL (http only to a loopback address)")
        return value

    @field_validator("sites")
    @classmethod
    def _site_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            if ":/" not in value.split("://", 1)[-1]:
                raise ValueError(
                    f"site {value!r}: write it as `host:/sites/path` "
                    "(e.g. contoso.sharepoint.com:/sites/engineering)"
                )
        return values

    @model_validator(mode="after")
    def _credentials(self) -> SharePointConfig:
        if (self.client_secret is None) == (self.client_certificate is None):
            raise ValueError(
                "sharepoint needs exactly one of `client_secret` or `client_certificate`"
            )
        if self.token_url is not None:
            if self.client_secret is None:
                raise ValueError("`token_url` works with `client_secret` only")
            if not is_secure_url(self.token_url):
                raise ValueError(
                    f"token_url {self.token_url!r} must be https (http only to a loopback address)"
                )
        if not self.sites and not self.drives:
            raise ValueError("sharepoint needs at least one entry in `sites` or `drives`")
        return self
