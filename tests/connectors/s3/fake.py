"""A stateful fake S3: moto 5 in server mode on 127.0.0.1, driven through real boto3.

Usage from any test (the end-to-end test included)::

    fake = FakeS3()
    fake.start()
    fake.put("public/handbook.md", "# Handbook")
    source = make_source_config(fake, "archive", tmp_path)   # YAML-able dict
    ...
    fake.stop()

The connector reaches it over HTTP with path-style addressing (as with MinIO),
so listing, paging, ETags and errors are moto's real S3 behaviour. Mutations
(``put``, ``put_multipart``, ``delete``, ``rename``) go through an admin
client. ``enable_auth()`` turns on moto's IAM checks so that unknown keys get
``InvalidAccessKeyId`` and users made with ``create_user(actions=...)`` get
``AccessDenied`` for what their policy lacks; ``disable_auth()`` turns them off.

moto keeps one in-process state per Python process: ``reset()`` (also done by
``start()``) wipes every bucket and IAM user and recreates ``bucket``.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

DEFAULT_BUCKET = "trove-docs"
# Dummy credentials: moto accepts any key until auth is enabled.
ACCESS_KEY_ID = "AKIAFAKETROVE0000001"
SECRET_ACCESS_KEY = "fake/secret+value-for-tests-only-0000001"

# What AWS documents against what moto checks. The Amazon S3 API Reference,
# "ListObjectsV2", section "Permissions": "You must have permission to perform
# the s3:ListBucket action" (likewise "ListObjects"). There is no IAM action
# named s3:ListObjectsV2. moto 5.2 authorises S3 calls by their botocore
# operation name instead (it asks for "s3:ListObjectsV2"), so a user granted
# what AWS requires would be refused. The fake follows AWS: a policy written
# with the documented IAM actions is widened to the names moto asks for.
_MOTO_OPERATION_NAMES: dict[str, tuple[str, ...]] = {
    "s3:ListBucket": ("s3:ListObjectsV2", "s3:ListObjects"),
}


def moto_actions(actions: list[str]) -> list[str]:
    """``actions`` (documented IAM action names) plus the names moto checks for them."""
    widened = list(actions)
    for action in actions:
        widened.extend(a for a in _MOTO_OPERATION_NAMES.get(action, ()) if a not in widened)
    return widened


# A small mixed corpus: readable text for the pipeline, one folder marker.
SAMPLE_OBJECTS: dict[str, str] = {
    "public/handbook.md": "# Employee handbook\n\nOffice hours are 9 to 5. Badges open doors.\n",
    "public/travel.txt": "Travel policy: book economy class for flights under six hours.\n",
    "public/": "",  # a console folder marker, never a document
    "hr/salaries.md": "# Salary bands\n\nBand 3 pays between 50k and 60k.\n",
    "private/merger.md": "# Project Falcon\n\nThe merger closes in March.\n",
}


class FakeS3:
    """One moto server with one bucket, plus helpers to change what it holds."""

    def __init__(self, bucket: str = DEFAULT_BUCKET, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.region = region
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        self._server: ThreadedMotoServer | None = None
        self.url = ""
        self.admin: Any = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeS3:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.admin = self.client()
        self.reset()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.disable_auth()
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget everything (all buckets, IAM users), switch auth off, recreate ``bucket``."""
        self.disable_auth()
        self._moto_api("reset", b"")
        self.create_bucket(self.bucket)

    def client(self, access_key_id: str | None = None, secret_access_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (admin keys unless others are given)."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 1},
            ),
        )

    # -- mutations ----------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        self.admin.create_bucket(Bucket=name)

    def seed(self, objects: dict[str, str] | None = None) -> None:
        for key, body in (SAMPLE_OBJECTS if objects is None else objects).items():
            self.put(key, body)

    def put(self, key: str, body: bytes | str, *, bucket: str | None = None) -> str:
        """Create or overwrite an object; returns its ETag without quotes."""
        data = body.encode() if isinstance(body, str) else body
        response = self.admin.put_object(Bucket=bucket or self.bucket, Key=key, Body=data)
        return str(response["ETag"]).strip('"')

    def put_multipart(self, key: str, parts: list[bytes]) -> str:
        """A multipart upload (every part but the last must be ≥ 5 MiB); ETag ``…-N``."""
        upload = self.admin.create_multipart_upload(Bucket=self.bucket, Key=key)
        done = []
        for number, part in enumerate(parts, start=1):
            answer = self.admin.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=part,
            )
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
        response = self.admin.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": done},
        )
        return str(response["ETag"]).strip('"')

    def delete(self, key: str) -> None:
        self.admin.delete_object(Bucket=self.bucket, Key=key)

    def rename(self, old: str, new: str) -> None:
        """What S3 calls a rename: copy to the new key, delete the old one."""
        self.admin.copy_object(
            Bucket=self.bucket, Key=new, CopySource={"Bucket": self.bucket, "Key": old}
        )
        self.delete(old)

    def keys(self) -> list[str]:
        response = self.admin.list_objects_v2(Bucket=self.bucket)
        return [obj["Key"] for obj in response.get("Contents", [])]

    def etag(self, key: str) -> str:
        return str(self.admin.head_object(Bucket=self.bucket, Key=key)["ETag"]).strip('"')

    # -- permissions --------------------------------------------------------------

    def create_user(self, name: str, actions: list[str]) -> tuple[str, str]:
        """An IAM user allowed only ``actions`` (e.g. ``["s3:ListBucket"]``); its key pair."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": moto_actions(actions), "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def enable_auth(self) -> None:
        """From now on moto checks keys and IAM policies (create users first)."""
        self._moto_api("reset-auth", b"0")

    def disable_auth(self) -> None:
        self._moto_api("reset-auth", b"inf")

    def _moto_api(self, path: str, data: bytes) -> None:
        request = urllib.request.Request(
            f"{self.url}/moto-api/{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def write_secret(folder: Path, name: str, value: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def make_source_config(
    fake: FakeS3,
    name: str,
    tmp_path: Path,
    *,
    prefix: str = "",
    page_size: int = 1000,
    acl_rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``type: s3`` source block for ``fake``, keys in files under ``tmp_path``.

    ACL: ``public/**`` is readable by group ``staff``, ``hr/**`` by group ``hr``;
    there is no ``default``, so anything else (``private/...``) is denied.
    """
    secrets = tmp_path / f"{name}-secrets"
    key_file = write_secret(secrets, "access_key_id", fake.access_key_id)
    secret_file = write_secret(secrets, "secret_access_key", fake.secret_access_key)
    rules = acl_rules
    if rules is None:
        rules = [
            {"match": f"{fake.bucket}/public/**", "allow_groups": ["staff"]},
            {"match": f"{fake.bucket}/hr/**", "allow_groups": ["hr"]},
        ]
    return {
        "name": name,
        "type": "s3",
        "s3": {
            "bucket": fake.bucket,
            "prefix": prefix,
            "region": fake.region,
            "endpoint_url": fake.url,
            "addressing_style": "path",
            "access_key_id": {"file": str(key_file)},
            "secret_access_key": {"file": str(secret_file)},
            "page_size": page_size,
            "connect_timeout_s": 5,
            "read_timeout_s": 10,
        },
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05, "max_total_s": 2},
        "acl": {"rules": rules},
    }
