"""A boto3 S3 client built from ``S3Config``, and boto errors turned into connector errors.

* Keys come from :class:`~connectors.credentials.Secret` (environment or file)
  when configured; otherwise boto3's default chain (environment, profile,
  instance or task role) applies. Key values never reach a message: errors are
  rebuilt from the operation, bucket and S3 error *code* only, since a server's
  own message may echo the access key id.
* ``request_checksum_calculation`` / ``response_checksum_validation`` are
  ``when_required``: boto3 ≥ 1.36 otherwise sends CRC checksum headers that
  MinIO and other S3-compatible stores reject (boto/boto3#4392).
* Retries use botocore's ``standard`` mode (throttling and 5xx, with backoff and
  jitter); the total number of attempts is the source's ``retry.max_attempts``.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from connectors.errors import ConnectorError, DocumentGone
from connectors.http import SourceAuthError, SourceUnavailable
from connectors.s3.config import S3Config
from core.retry import RetryPolicy

# S3 error codes that mean "these credentials may not do this".
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "403",
        "401",
    }
)
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class ObjectNotFound(DocumentGone):
    """The object was listed but is gone when fetched (deleted between list and fetch).

    A :class:`~connectors.errors.DocumentGone`: the pipeline deletes the document.
    """


class ObjectTooLarge(ConnectorError):
    """The object is bigger than the source's ``limits.max_bytes``; it is not downloaded."""


def build_client(config: S3Config, retry: RetryPolicy) -> Any:
    """A boto3 S3 client for ``config``; secrets are read here and kept only inside boto3."""
    botocore_config = Config(
        s3={"addressing_style": config.addressing_style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # `total_max_attempts` counts the first try, as `retry.max_attempts` does for HTTP
        # connectors (botocore's own `max_attempts` would add one more).
        retries={"mode": "standard", "total_max_attempts": retry.max_attempts},
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
    )
    keys: dict[str, str] = {}
    if config.access_key_id is not None and config.secret_access_key is not None:
        keys["aws_access_key_id"] = config.access_key_id.read()
        keys["aws_secret_access_key"] = config.secret_access_key.read()
        if config.session_token is not None:
            keys["aws_session_token"] = config.session_token.read()
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url or None,
        region_name=config.region or None,
        config=botocore_config,
        **keys,
    )


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def where(config: S3Config) -> str:
    """``s3://bucket/prefix`` plus the endpoint when one is set (never credentials)."""
    location = f"s3://{config.bucket}/{config.prefix}"
    return f"{location} at {config.endpoint_url}" if config.endpoint_url else location


def translate(exc: Exception, config: S3Config, action: str) -> ConnectorError:
    """A connector error for a boto failure while doing ``action`` (e.g. "listing")."""
    place = where(config)
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return ConnectorError(
                f"{action} {place} failed: bucket {config.bucket!r} does not exist "
                "(check `bucket`, `region` and `endpoint_url`)"
            )
        if code in AUTH_CODES or status in (401, 403):
            return SourceAuthError(
                f"{action} {place} was refused ({code or status}): the credentials need "
                "s3:ListBucket on the bucket and s3:GetObject on its objects (docs/connectors.md)"
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
            return ConnectorError(
                f"{action} {place} failed ({code}): the bucket is in another region; "
                "set `region` to the bucket's region"
            )
        return SourceUnavailable(f"{action} {place} failed with S3 error {code or status}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SourceAuthError(
            f"{action} {place}: no AWS credentials found (set `access_key_id` and "
            "`secret_access_key`, or configure boto3's default chain)"
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        endpoint = config.endpoint_url or "the AWS endpoint"
        return SourceUnavailable(
            f"{action} {place} failed: cannot reach {endpoint} ({type(exc).__name__})"
        )
    if isinstance(exc, BotoCoreError):
        return SourceUnavailable(f"{action} {place} failed: {type(exc).__name__}")
    return ConnectorError(f"{action} {place} failed: {type(exc).__name__}")
