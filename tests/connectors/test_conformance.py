"""Every connector passes the conformance suite (``tests/connectors/conformance.py``).

Each class below gives the suite one adapter: a :class:`SourceWorld` around the
connector's own fake (a temporary folder; the fake Confluence site, Graph tenant
and website on loopback; moto for S3), with pages small enough that a run spans
several batches. Servers are started once for the module.
"""

from __future__ import annotations

import errno
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pytest_httpserver import HTTPServer

from connectors import filesystem
from connectors.base import Connector
from connectors.confluence.config import ConfluenceConfig
from connectors.s3.config import S3Config
from connectors.sharepoint.config import SharePointConfig
from connectors.sharepoint.shared_reads import SHARED_READS
from connectors.web.config import WebConfig
from pipelines.config import SourceConfig
from tests.connectors.confluence.fake import TOKEN_ENV, FakeConfluence, make_source_config
from tests.connectors.conformance import (
    SOURCE,
    ConnectorConformance,
    CredentialCase,
    SourceWorld,
    basic_auth,
    open_confluence,
    open_filesystem,
    open_s3,
    open_sharepoint,
    open_web,
)
from tests.connectors.s3.fake import FakeS3, moto_actions, write_secret
from tests.connectors.sharepoint.fake import GRAPH_HOST, FakeSharePoint
from tests.connectors.sharepoint.fake import make_source_config as sharepoint_source
from tests.connectors.web.fake import FakeWeb
from tests.connectors.web.fake import make_source_config as web_source

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


def _number(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def _scoped(
    entry: dict[str, Any], include: list[str] | None, exclude: list[str] | None
) -> dict[str, Any]:
    if include is not None:
        entry["include"] = include
    if exclude is not None:
        entry["exclude"] = exclude
    return entry


# -- filesystem ------------------------------------------------------------------------------


class FilesystemWorld(SourceWorld):
    """Files under a temporary folder; an "unreadable" file refuses to open (EACCES),
    whoever runs the tests (root reads a mode-000 file)."""

    full_listing = True
    reports_deletions = False
    config_model = None

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.root = root
        self.unreadable: set[str] = set()
        self.opened: Counter[str] = Counter()
        real_open = filesystem.open_real_file

        def open_real_file(root_fd: int, real: str) -> Any:
            self.opened[real] += 1
            if real in self.unreadable:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(root_fd, real)

        monkeypatch.setattr(filesystem, "open_real_file", open_real_file)

    @staticmethod
    def _path(key: str) -> str:
        return f"{key}.txt"

    def _create(self, key: str, text: str) -> str:
        path = self.root / self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return f"{SOURCE}:{self._path(key)}"

    def _update(self, key: str, text: str) -> None:
        (self.root / self._path(key)).write_text(text, encoding="utf-8")

    def _remove(self, key: str) -> None:
        (self.root / self._path(key)).unlink()

    def fail(self, key: str) -> None:
        self.unreadable.add(self._path(key))

    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        entry = {"name": SOURCE, "type": "filesystem", "path": str(self.root)}
        return open_filesystem(SourceConfig.model_validate(_scoped(entry, include, exclude)))

    def glob(self, relative: str) -> str:
        return relative

    def content_reads(self, key: str) -> int:
        return self.opened[self._path(key)]


class TestFilesystemConformance(ConnectorConformance):
    @pytest.fixture
    def world(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SourceWorld:
        return FilesystemWorld(tmp_path / "docs", monkeypatch)


# -- Confluence ------------------------------------------------------------------------------


class ConfluenceWorld(SourceWorld):
    """Pages in folders of space ENG (``keep/doc-1`` is page ``doc-1`` in folder ``keep``)."""

    full_listing = False
    reports_deletions = False  # trashed pages leave list_ids; CQL does not report them
    config_model = ConfluenceConfig

    def __init__(self, fake: FakeConfluence, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.fake = fake
        self.monkeypatch = monkeypatch
        self.pages: dict[str, str] = {}
        self.folders: dict[str, str] = {}
        fake.add_space("ENG", "Engineering", users=["u-svc"])
        monkeypatch.setenv(TOKEN_ENV, fake.token)

    def _create(self, key: str, text: str) -> str:
        folder, name = key.split("/")
        if folder not in self.folders:
            self.folders[folder] = self.fake.add_folder("ENG", folder)
        self.pages[key] = self.fake.add_page(
            "ENG", name, f"<p>{text}</p>", parent=self.folders[folder]
        )
        return f"{SOURCE}:page:{self.pages[key]}"

    def _update(self, key: str, text: str) -> None:
        self.fake.edit_page(self.pages[key], f"<p>{text}</p>")

    def _remove(self, key: str) -> None:
        self.fake.trash_page(self.pages[key])

    def fail(self, key: str) -> None:
        # Who may read the page cannot be established: never indexed with a guessed ACL.
        restriction = f"/wiki/rest/api/content/{self.pages[key]}/restriction"
        self.fake.fail_next(None, 500, path=restriction)

    def _entry(self, **confluence: Any) -> dict[str, Any]:
        block = {"spaces": ["ENG"], "include_attachments": False, "page_limit": 2, **confluence}
        return make_source_config(self.fake, SOURCE, **block)

    def _open(self, entry: dict[str, Any]) -> Connector:
        return open_confluence(SourceConfig.model_validate(entry), self.sleeps.append)

    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        return self._open(_scoped(self._entry(), include, exclude))

    def glob(self, relative: str) -> str:
        return f"ENG/{relative}"

    def content_reads(self, key: str) -> int:
        page = f"/wiki/api/v2/pages/{self.pages[key]}"
        return len([c for c in self.fake.calls_to(page) if c.path == page and c.arg("body-format")])

    def credential_cases(self) -> list[CredentialCase]:
        wrong = "wrong-atl-token-Zx81Qm"
        self.monkeypatch.setenv("TROVE_CONFORMANCE_WRONG_TOKEN", wrong)
        refused = self._entry()
        refused["confluence"]["api_token"] = {"env": "TROVE_CONFORMANCE_WRONG_TOKEN"}
        unreachable = self._entry(url=f"{UNREACHABLE}/wiki")
        email, token = self.fake.email, self.fake.token
        return [
            CredentialCase(
                "a refused API token (401)",
                lambda: self._open(refused),
                lambda: (wrong, basic_auth(email, wrong)),
            ),
            CredentialCase(
                "an unreachable site",
                lambda: self._open(unreachable),
                lambda: (token, basic_auth(email, token)),
            ),
        ]


@pytest.fixture(scope="module")
def confluence_http() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.start()
    yield server
    server.clear()
    server.stop()


class TestConfluenceConformance(ConnectorConformance):
    @pytest.fixture
    def world(
        self, confluence_http: HTTPServer, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[SourceWorld]:
        fake = FakeConfluence(server=confluence_http).start()
        yield ConfluenceWorld(fake, monkeypatch)
        fake.stop()


# -- SharePoint --------------------------------------------------------------------------------


class SharePointWorld(SourceWorld):
    """Files in two libraries of one site (odd numbers in Documents, even in Archive),
    so that an incremental run is one batch per library."""

    full_listing = False
    reports_deletions = True
    config_model = SharePointConfig

    def __init__(self, fake: FakeSharePoint, tmp_path: Path) -> None:
        super().__init__()
        self.fake = fake
        self.tmp_path = tmp_path
        site = fake.add_site("eng", "Engineering")
        self.drives = [fake.add_drive("Documents", site), fake.add_drive("Archive", site)]
        self.items: dict[str, tuple[str, str]] = {}  # key -> (drive id, item id)

    def _create(self, key: str, text: str) -> str:
        drive = self.drives[_number(key) % 2 == 0]
        item = self.fake.add_file(drive, f"{key}.txt", text)
        self.items[key] = (drive.id, item)
        return f"{SOURCE}:{drive.id}:{item}"

    def _update(self, key: str, text: str) -> None:
        self.fake.edit_file(self.items[key][1], text)

    def _remove(self, key: str) -> None:
        self.fake.delete_file(self.items[key][1])

    def fail(self, key: str) -> None:
        drive, item = self.items[key]
        error = {"error": {"code": "generalException", "message": "An error occurred."}}
        path = f"/v1.0/drives/{drive}/items/{item}/permissions"
        self.fake.queue_response("GET", path, 500, error, times=1000)

    def _entry(self, **block: Any) -> dict[str, Any]:
        return sharepoint_source(self.fake, SOURCE, self.tmp_path, page_size=2, **block)

    def _open(self, entry: dict[str, Any]) -> Connector:
        return open_sharepoint(SourceConfig.model_validate(entry), self.sleeps.append)

    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        return self._open(_scoped(self._entry(), include, exclude))

    def glob(self, relative: str) -> str:
        return f"*/{relative}"  # {library}/{folders}/{name}

    def content_reads(self, key: str) -> int:
        drive, item = self.items[key]
        return len(self.fake.requests_to(rf"/drives/{drive}/items/{item}/content$"))

    def _issued_tokens(self) -> list[str]:
        headers = (r.authorization or "" for r in self.fake.requests)
        return [h.removeprefix("Bearer ").strip() for h in headers if h.startswith("Bearer ")]

    def credential_cases(self) -> list[CredentialCase]:
        wrong = "wrong~Secret.Zq81_xYv0pLmNoP"
        refused = self._entry()
        refused["sharepoint"]["client_secret"] = {
            "file": str(write_secret(self.tmp_path / "wrong", "client-secret", wrong))
        }
        good = self.fake.client_secret
        site = f"/v1.0/sites/{GRAPH_HOST}:/sites/eng"

        def graph_refuses() -> Connector:
            error = {"error": {"code": "InvalidAuthenticationToken", "message": "Token expired."}}
            self.fake.queue_response("GET", site, 401, error, times=100)
            return self._open(self._entry())

        def secrets(*known: str) -> Any:
            return lambda: (*known, *self._issued_tokens())

        return [
            CredentialCase(
                "a wrong client secret (invalid_client)",
                lambda: self._open(refused),
                secrets(wrong),
            ),
            CredentialCase("Graph refuses the token (401)", graph_refuses, secrets(good)),
            CredentialCase(
                "an unreachable token endpoint",
                lambda: self._open(self._entry(token_url=f"{UNREACHABLE}/token")),
                secrets(good),
            ),
        ]


@pytest.fixture(scope="module")
def sharepoint_http() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


class TestSharePointConformance(ConnectorConformance):
    @pytest.fixture
    def world(self, sharepoint_http: HTTPServer, tmp_path: Path) -> Iterator[SourceWorld]:
        SHARED_READS.clear()  # item ids repeat across tests: no permission read may carry over
        fake = FakeSharePoint(server=sharepoint_http).start()
        yield SharePointWorld(fake, tmp_path)
        fake.stop()
        SHARED_READS.clear()


# -- S3 ------------------------------------------------------------------------------------------


class S3World(SourceWorld):
    """Objects in moto's bucket; a failing object is one the reading key may not GetObject (403)."""

    full_listing = True
    reports_deletions = False
    config_model = S3Config

    def __init__(self, fake: FakeS3, tmp_path: Path) -> None:
        super().__init__()
        self.fake = fake
        self.tmp_path = tmp_path
        self.keys = (fake.access_key_id, fake.secret_access_key)
        self.denied: list[str] = []
        self.gets: Counter[str] = Counter()
        self.auth = False

    @staticmethod
    def _key(key: str) -> str:
        return f"{key}.txt"

    def _admin(self) -> Any:
        if self.auth:  # the admin keys are no IAM user's: changes go in with checks off
            self.fake.disable_auth()
            self.auth = False
        return self.fake

    def _create(self, key: str, text: str) -> str:
        self._admin().put(self._key(key), text)
        return f"{SOURCE}:{self.fake.bucket}/{self._key(key)}"

    def _update(self, key: str, text: str) -> None:
        self._admin().put(self._key(key), text)

    def _remove(self, key: str) -> None:
        self._admin().delete(self._key(key))

    def fail(self, key: str) -> None:
        self.denied.append(self._key(key))
        self.keys = self._reader(f"reader-{len(self.denied)}", self.denied)
        self.fake.enable_auth()
        self.auth = True

    def _reader(self, name: str, denied: list[str]) -> tuple[str, str]:
        """An IAM user who may list and read everything but the ``denied`` keys."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.fake.url,
            region_name=self.fake.region,
            aws_access_key_id=self.fake.access_key_id,
            aws_secret_access_key=self.fake.secret_access_key,
        )
        bucket = self.fake.bucket
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": moto_actions(["s3:ListBucket", "s3:GetObject"]),
                    "Resource": "*",
                },
                {
                    "Effect": "Deny",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in denied],
                },
            ],
        }
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def _entry(self, keys: tuple[str, str], **block: Any) -> dict[str, Any]:
        folder = self.tmp_path / f"keys-{keys[0]}"
        return {
            "name": SOURCE,
            "type": "s3",
            "s3": {
                "bucket": self.fake.bucket,
                "region": self.fake.region,
                "endpoint_url": self.fake.url,
                "addressing_style": "path",
                "access_key_id": {"file": str(write_secret(folder, "id", keys[0]))},
                "secret_access_key": {"file": str(write_secret(folder, "secret", keys[1]))},
                "page_size": 2,
                "connect_timeout_s": 2,
                "read_timeout_s": 5,
                **block,
            },
            "retry": {"max_attempts": 1, "base_delay_s": 0.01, "max_delay_s": 0.05},
        }

    def _open(self, entry: dict[str, Any]) -> Connector:
        connector = open_s3(SourceConfig.model_validate(entry))

        def record(params: dict[str, Any], **_: Any) -> None:
            self.gets[params.get("Key", "")] += 1

        connector.client.meta.events.register("before-parameter-build.s3.GetObject", record)
        return connector

    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        return self._open(_scoped(self._entry(self.keys), include, exclude))

    def glob(self, relative: str) -> str:
        return f"{self.fake.bucket}/{relative}"

    def content_reads(self, key: str) -> int:
        return self.gets[self._key(key)]

    def credential_cases(self) -> list[CredentialCase]:
        wrong = ("AKIAWRONGKEY0000TROV", "wrong/secret+Zq81xYv0pLmNoPconformance")

        def refused() -> Connector:
            self.fake.enable_auth()
            self.auth = True
            return self._open(self._entry(wrong))

        good = self.keys
        return [
            CredentialCase("unknown keys (InvalidAccessKeyId)", refused, lambda: wrong),
            CredentialCase(
                "an unreachable endpoint",
                lambda: self._open(self._entry(good, endpoint_url=UNREACHABLE)),
                lambda: good,
            ),
        ]


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[FakeS3]:
    fake = FakeS3().start()
    yield fake
    fake.stop()


class TestS3Conformance(ConnectorConformance):
    @pytest.fixture
    def world(self, moto_s3: FakeS3, tmp_path: Path) -> Iterator[SourceWorld]:
        moto_s3.reset()
        yield S3World(moto_s3, tmp_path)
        moto_s3.disable_auth()


# -- web ---------------------------------------------------------------------------------------


class WebWorld(SourceWorld):
    """Pages linked from a ``noindex`` hub at ``/`` (the start URL, not a document itself).

    A deleted page answers 404 and stays linked, as a dead link does.
    """

    full_listing = True
    reports_deletions = True  # a page it finds gone (404/410) is named in `deleted`
    config_model = WebConfig

    def __init__(self, fake: FakeWeb) -> None:
        super().__init__()
        self.fake = fake
        self.links: list[str] = []
        self._hub()

    def _hub(self) -> None:
        self.fake.html("/", "Hub", "Every document.", links=self.links, robots="noindex")

    def _create(self, key: str, text: str) -> str:
        self.fake.html(f"/{key}", key, text)
        self.links.append(f"/{key}")
        self._hub()
        return f"{SOURCE}:{self.fake.url}/{key}"

    def _update(self, key: str, text: str) -> None:
        self.fake.edit(f"/{key}", text)

    def _remove(self, key: str) -> None:
        self.fake.remove(f"/{key}")

    def fail(self, key: str) -> None:
        self.fake.fail(f"/{key}", 500, times=1000)

    def _open(self, entry: dict[str, Any]) -> Connector:
        return open_web(SourceConfig.model_validate(entry), self.sleeps.append)

    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        # The hub is how the crawl finds the documents: it is always in scope.
        scope = None if include is None else [*include, "/"]
        return self._open(_scoped(web_source(self.fake, SOURCE, batch_size=2), scope, exclude))

    def glob(self, relative: str) -> str:
        return f"/{relative}"

    def content_reads(self, key: str) -> int:
        return len(self.fake.requested(f"/{key}"))

    def credential_cases(self) -> list[CredentialCase]:
        # The web block holds no secret; a start URL may (user-info), and must never show.
        secret = "Zq81xYv0-conformance-password"
        port = self.fake.url.rsplit(":", 1)[1]

        def with_password(start: str) -> dict[str, Any]:
            return web_source(self.fake, SOURCE, start_urls=[start])

        def failing_site() -> Connector:
            self.fake.fail("/", 500, times=1000)
            return self._open(with_password(f"http://bot:{secret}@127.0.0.1:{port}/"))

        return [
            CredentialCase(
                "a password in the start URL, host unreachable",
                lambda: self._open(with_password(f"http://bot:{secret}@127.0.0.1:9/")),
                lambda: (secret,),
            ),
            CredentialCase(
                "a password in the start URL, the site failing (500)",
                failing_site,
                lambda: (secret,),
            ),
        ]


@pytest.fixture(scope="module")
def web_site() -> Iterator[FakeWeb]:
    fake = FakeWeb().start()
    yield fake
    fake.stop()


class TestWebConformance(ConnectorConformance):
    @pytest.fixture
    def world(self, web_site: FakeWeb) -> SourceWorld:
        web_site.reset()
        return WebWorld(web_site)
