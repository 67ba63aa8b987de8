"""Connecting to OpenSearch: client options from ``IndexConfig``, readiness and version.

Example::

    client = build_client(settings.index)
    cluster = check_ready(client, settings.index.hosts)   # raises with a clear message
    cluster.supports_hybrid_filter                        # True on 3.x
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth
from opensearchpy import exceptions as os_errors

from retrieval.index.config import IndexConfig
from retrieval.index.opensearch.errors import OpenSearchUnavailableError, OpenSearchVersionError
from retrieval.index.opensearch.queries import (
    HYBRID_FILTER_VERSION,
    MIN_VERSION,
    RRF_WEIGHTS_VERSION,
    Version,
)

# Transient statuses retried by the transport itself (bulk items are retried in bulk.py).
RETRY_ON_STATUS = (502, 503, 504)


@dataclass(frozen=True)
class ClusterInfo:
    """What Trove needs to know about the cluster it talks to."""

    number: str
    version: Version
    distribution: str
    cluster_name: str

    @property
    def supports_hybrid_filter(self) -> bool:
        return self.version >= HYBRID_FILTER_VERSION

    @property
    def supports_rrf_weights(self) -> bool:
        return self.version >= RRF_WEIGHTS_VERSION


def parse_version(number: str) -> Version:
    """``"3.2.0"`` -> ``(3, 2)``; ``"2.19.1-SNAPSHOT"`` -> ``(2, 19)``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", number or "")
    if not match:
        raise OpenSearchVersionError(f"cannot read the cluster version {number!r}")
    return int(match.group(1)), int(match.group(2))


def default_aws_credentials() -> Any:
    """Credentials from botocore's default chain (env, profile, instance role)."""
    try:
        import botocore.session
    except ImportError as exc:
        raise OpenSearchUnavailableError(
            "index.auth.aws_region is set, which signs requests with AWS SigV4: install "
            "botocore (`pip install 'trove[aws]'`)"
        ) from exc
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise OpenSearchUnavailableError(
            "index.auth.aws_region is set but no AWS credentials were found "
            "(environment, ~/.aws or an instance role)"
        )
    return credentials


def client_options(
    config: IndexConfig, *, aws_credentials: Callable[[], Any] = default_aws_credentials
) -> dict[str, Any]:
    """Keyword arguments for ``OpenSearch(...)`` (separate, so they are testable)."""
    auth = config.auth
    basic = auth.username is not None or auth.password is not None
    if basic and auth.aws_region:
        raise ValueError(
            "index.auth: give either username/password (basic auth) or aws_region (SigV4), not both"
        )
    if basic and (auth.username is None or auth.password is None):
        raise ValueError("index.auth: basic auth needs both username and password")
    if not config.hosts:
        raise ValueError("index.hosts is empty: list at least one OpenSearch URL")
    options: dict[str, Any] = {
        "hosts": list(config.hosts),
        "timeout": config.timeout_s,
        "max_retries": 3,
        "retry_on_timeout": True,
        "retry_on_status": RETRY_ON_STATUS,
        "http_compress": True,
        "verify_certs": config.verify_certs,
        "ssl_show_warn": config.verify_certs,
    }
    if any(h.lower().startswith("https://") for h in config.hosts):
        options["use_ssl"] = True
    if config.ca_certs is not None:
        options["ca_certs"] = str(config.ca_certs)
    if config.client_cert is not None:
        options["client_cert"] = str(config.client_cert)
    if config.client_key is not None:
        options["client_key"] = str(config.client_key)
    if auth.username is not None and auth.password is not None:  # basic, checked above
        options["http_auth"] = (auth.username, auth.password.get_secret_value())
    elif auth.aws_region:
        options["http_auth"] = Urllib3AWSV4SignerAuth(
            aws_credentials(), auth.aws_region, auth.aws_service
        )
    return options


def build_client(config: IndexConfig, **kwargs: Any) -> OpenSearch:
    """An ``OpenSearch`` client for ``config`` (no request is made yet)."""
    return OpenSearch(**client_options(config, **kwargs))


def check_ready(client: OpenSearch, hosts: list[str] | None = None) -> ClusterInfo:
    """The cluster's identity, or an error that says what is wrong and what to do.

    :raises OpenSearchUnavailableError: unreachable, credentials refused, or health red.
    :raises OpenSearchVersionError: not OpenSearch, or older than 2.19.
    """
    where = ", ".join(hosts) if hosts else "the configured hosts"
    try:
        info = client.info()
    except os_errors.ConnectionError as exc:
        raise OpenSearchUnavailableError(
            f"cannot reach OpenSearch at {where}: {exc.error}; "
            "start it (`docker compose up -d opensearch`) or fix index.hosts"
        ) from exc
    except os_errors.AuthenticationException as exc:
        raise OpenSearchUnavailableError(
            f"OpenSearch at {where} rejected the credentials (401); check index.auth"
        ) from exc
    except os_errors.AuthorizationException as exc:
        raise OpenSearchUnavailableError(
            f"OpenSearch at {where} refused access (403); the user needs cluster monitor "
            "and index permissions"
        ) from exc
    except os_errors.TransportError as exc:
        raise OpenSearchUnavailableError(
            f"OpenSearch at {where} answered {exc.status_code}: {exc.error}"
        ) from exc
    version = info.get("version") or {}
    number = str(version.get("number", ""))
    distribution = str(version.get("distribution", "elasticsearch"))
    if distribution != "opensearch":
        raise OpenSearchVersionError(
            f"the cluster at {where} is {distribution} {number}, not OpenSearch; Trove needs "
            f"OpenSearch {MIN_VERSION[0]}.{MIN_VERSION[1]} or later"
        )
    cluster = ClusterInfo(
        number=number,
        version=parse_version(number),
        distribution=distribution,
        cluster_name=str(info.get("cluster_name", "")),
    )
    if cluster.version < MIN_VERSION:
        raise OpenSearchVersionError(
            f"OpenSearch {number} at {where} is too old: Trove needs "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or later (hybrid pagination_depth, RRF, "
            "faiss cosine); upgrade the cluster"
        )
    try:
        health = client.cluster.health(request_timeout=10)
    except os_errors.TransportError as exc:
        raise OpenSearchUnavailableError(
            f"OpenSearch at {where} did not report its health: {exc}"
        ) from exc
    if health.get("status") == "red":
        raise OpenSearchUnavailableError(
            f"OpenSearch at {where} is red (some primary shards are unassigned): "
            f"{health.get('unassigned_shards')} unassigned shards"
        )
    return cluster
