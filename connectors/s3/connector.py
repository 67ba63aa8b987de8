"""S3 connector: a full, paged listing each run; bodies only through :meth:`S3Connector.fetch`.

Why it looks like this:

* **Listing is the change feed.** ``ListObjectsV2`` is cheap and strongly
  consistent, so every run lists the whole bucket (under ``prefix``) and the
  pipeline compares version stamps: new id = added, other stamp = changed,
  missing from the listing = deleted (the last batch carries ``complete=True``).
  A rename is a delete plus an add, because the id is the key.
* **Version stamp = ``{ETag}:{Size}``**, opaque. The ETag is not an MD5 for
  multipart (``…-N``) or SSE-KMS objects, so it is never compared with a
  content hash; any difference means "changed". ``changes()`` downloads
  nothing: the pipeline calls :meth:`S3Connector.fetch` (``GetObject``) for the
  new and changed ones only.
* **Ids** are ``{source}:{bucket}/{key}``; ``path`` is ``{bucket}/{key}``, the
  string that the source's ``include``/``exclude`` globs and ``acl`` rules
  match, both as written and as the place it names (``a//b``, ``a/./b`` and
  ``x/../a/b`` are ``a/b``; see :mod:`core.paths`), so an odd key is held
  to the rules of every folder it could be read as; ``uri`` is
  ``s3://bucket/key`` on AWS, or ``{endpoint_url}/bucket/key`` for an
  S3-compatible store. Keys ending in ``/`` (console "folders") are skipped.
* **No native ACL.** S3 object ACLs name AWS accounts, not employees, and are
  disabled by default on new buckets (BucketOwnerEnforced). Every document
  carries :meth:`Acl.empty`; the source's ``acl`` rules (glob on ``bucket/key``)
  and ``default`` decide, so a bucket with no rule is readable by nobody.

Cursor (JSON, opaque to the pipeline)::

    {"v": 1, "bucket": "b", "prefix": "p/", "start_after": "p/last-key-of-batch"}
    {"v": 1, "bucket": "b", "prefix": "p/", "done": true}       # after the last batch

A page is yielded only once the next page has been read, and its cursor says
"resume after my last key" (``StartAfter``). If a listing fails half way, the
next run resumes from there; that resumed listing did not see the keys before
the cursor, so its last batch is **not** ``complete`` and nothing is deleted on
that run — the following run starts from the top again (the ``done`` cursor)
and deletes what disappeared. A cursor for another bucket or prefix is ignored.

Errors: a missing bucket, refused credentials (``SourceAuthError``) or an
unreachable endpoint (``SourceUnavailable``) raise
:class:`~connectors.errors.ConnectorError` with the bucket and endpoint, never a
key. ``fetch`` of an object deleted since it was listed raises
:class:`~connectors.s3.client.ObjectNotFound`, a
:class:`~connectors.errors.DocumentGone`: the pipeline deletes the document.
``fetch`` of a key outside ``include``/``exclude`` (an id from before an
``exclude`` was added: a retried download, a document the index lost) raises a
``DocumentGone`` too, before any request, as the filesystem connector does.
An object over ``limits.max_bytes`` raises ``ObjectTooLarge`` (a plain
``ConnectorError``) before its body is read: the pipeline records a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from connectors.base import ChangeBatch, DocumentStamp, settings_block
from connectors.common import UnreadableCursor, dump_cursor, load_cursor
from connectors.errors import ConnectorError, DocumentGone
from connectors.models import SourceDocument
from connectors.s3.client import (
    MISSING_KEY_CODES,
    ObjectNotFound,
    ObjectTooLarge,
    build_client,
    error_code,
    translate,
)
from connectors.s3.config import S3Config
from connectors.scope import SourceScope
from core.acl import Acl

CURSOR_VERSION = 1


def version_stamp(etag: str, size: int) -> str:
    """The opaque stamp for one object version: ETag (quotes stripped) and size."""
    return f"{etag.strip().strip(chr(34))}:{size}"


class S3Connector:
    """Lists and reads one ``type: s3`` source (a bucket, optionally under a prefix).

    >>> source = settings.source("archive")  # doctest: +SKIP
    >>> connector = S3Connector(source.scope(), source.s3)  # doctest: +SKIP
    >>> for batch in connector.changes(None): ...  # doctest: +SKIP

    :param scope: the source's name, globs, ``max_bytes`` and retry budget.
    :param settings: its ``s3`` block: bucket, prefix, endpoint and keys.
    :param client: a boto3 S3 client to use instead of building one (tests, custom sessions).
    :raises ValueError: ``settings`` is not an ``s3:`` block.
    :raises ConnectorError: a configured key cannot be read (environment variable or file).
    """

    def __init__(
        self, scope: SourceScope, settings: S3Config, *, client: Any | None = None
    ) -> None:
        self.scope = scope
        self.settings = settings_block(settings, S3Config, "s3", "S3Connector")
        self.source = scope.name
        self._owns_client = client is None
        self.client = client if client is not None else build_client(self.settings, scope.retry)

    # -- the contract -------------------------------------------------------------

    def changes(self, cursor: str | None) -> Iterator[ChangeBatch]:
        """Every object, one batch per listing page; the last batch is ``complete``.

        :raises ConnectorError: the bucket cannot be listed (missing, refused, unreachable).
        """
        start_after = self._resume_point(cursor)
        resumed = start_after is not None
        held: tuple[list[SourceDocument], str | None] | None = None
        last_key = start_after
        for contents in self._pages(start_after):
            if contents:
                last_key = contents[-1]["Key"]
            documents = [self._document(obj) for obj in contents if self._wanted(obj["Key"])]
            if held is not None:
                yield ChangeBatch(documents=held[0], cursor=self._cursor(start_after=held[1]))
            held = (documents, last_key)
        yield ChangeBatch(
            documents=held[0] if held else [],
            cursor=self._cursor(done=True),
            complete=not resumed,
        )

    def list_ids(self) -> Iterator[DocumentStamp]:
        """The same listing as stamps (id, version, empty native ACL, path); no bodies."""
        for contents in self._pages(None):
            for obj in contents:
                if self._wanted(obj["Key"]):
                    doc = self._document(obj)
                    yield DocumentStamp(doc.doc_id, doc.version, doc.acl, doc.path)

    def fetch(self, doc_id: str) -> SourceDocument:
        """The object's current bytes (``GetObject``), with the stamp of what was read.

        :raises ObjectNotFound: the key no longer exists (deleted after it was listed).
        :raises DocumentGone: the key is outside the source's ``include``/``exclude``
            (nothing is requested).
        :raises ObjectTooLarge: the object exceeds the source's ``limits.max_bytes``.
        :raises ConnectorError: ``doc_id`` is not this source's, or S3 refused the read.
        """
        key = self._key_of(doc_id)
        if not self._wanted(key):
            # The listing's rule: an id from before an `exclude` was added never comes back.
            raise DocumentGone(
                f"{doc_id!r} is outside the include/exclude globs of source {self.source!r}"
            )
        try:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in MISSING_KEY_CODES:
                raise ObjectNotFound(
                    f"{doc_id}: s3://{self.settings.bucket}/{key} no longer exists "
                    "(deleted after it was listed)"
                ) from exc
            raise translate(exc, self.settings, f"reading {key!r} from") from exc
        except BotoCoreError as exc:
            raise translate(exc, self.settings, f"reading {key!r} from") from exc
        body = response["Body"]
        size = int(response.get("ContentLength") or 0)
        limit = self.scope.max_bytes
        try:
            if size > limit:
                raise ObjectTooLarge(
                    f"{doc_id}: {size} bytes is over the source's limit of {limit} bytes"
                )
            content = body.read()
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, self.settings, f"reading {key!r} from") from exc
        finally:
            body.close()
        obj = {
            "Key": key,
            "ETag": response.get("ETag", ""),
            "Size": len(content),
            "LastModified": response.get("LastModified"),
        }
        return self._document(obj, content=content)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- helpers ------------------------------------------------------------------

    def _pages(self, start_after: str | None) -> Iterator[list[dict[str, Any]]]:
        params: dict[str, Any] = {
            "Bucket": self.settings.bucket,
            "Prefix": self.settings.prefix,
            "PaginationConfig": {"PageSize": self.settings.page_size},
        }
        if start_after:
            params["StartAfter"] = start_after
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(**params):
                yield list(page.get("Contents") or [])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, self.settings, "listing") from exc

    def _wanted(self, key: str) -> bool:
        if key.endswith("/"):
            return False  # a console "folder" marker, not a document
        # Read as written and as the place it names: `hr//x`, `hr/./x` or
        # `a/../hr/x` cannot dodge an exclude that names `hr/` (core.paths.selected).
        return self.scope.selects((f"{self.settings.bucket}/{key}",))

    def _document(self, obj: dict[str, Any], content: bytes | None = None) -> SourceDocument:
        key: str = obj["Key"]
        bucket = self.settings.bucket
        name = PurePosixPath(key)
        return SourceDocument(
            doc_id=f"{self.source}:{bucket}/{key}",
            source=self.source,
            path=f"{bucket}/{key}",
            uri=self._uri(key),
            title=name.stem or name.name,
            version=version_stamp(str(obj.get("ETag") or ""), int(obj.get("Size") or 0)),
            size=int(obj.get("Size") or 0),
            modified_at=obj.get("LastModified"),
            doc_type=name.suffix.lower().lstrip("."),
            acl=Acl.empty(),
            content=content,
        )

    def _uri(self, key: str) -> str:
        bucket = self.settings.bucket
        if self.settings.endpoint_url:
            return f"{self.settings.endpoint_url.rstrip('/')}/{bucket}/{quote(key)}"
        return f"s3://{bucket}/{key}"

    def _key_of(self, doc_id: str) -> str:
        head = f"{self.source}:{self.settings.bucket}/"
        if not doc_id.startswith(head) or len(doc_id) == len(head):
            raise ConnectorError(
                f"{doc_id!r} is not a document of source {self.source!r} (expected {head}<key>)"
            )
        return doc_id[len(head) :]

    def _cursor(self, *, start_after: str | None = None, done: bool = False) -> str:
        data: dict[str, Any] = {
            "bucket": self.settings.bucket,
            "prefix": self.settings.prefix,
        }
        if done or start_after is None:
            data["done"] = True
        else:
            data["start_after"] = start_after
        return dump_cursor(data, version=CURSOR_VERSION)

    def _resume_point(self, cursor: str | None) -> str | None:
        """The key to list after; ``None`` (full listing) for no, finished or foreign cursors."""
        if not cursor:
            return None
        try:
            data = load_cursor(cursor, version=CURSOR_VERSION)
        except UnreadableCursor:
            return None
        if (
            data.get("bucket") != self.settings.bucket
            or data.get("prefix") != self.settings.prefix
            or data.get("done")
        ):
            return None
        start_after = data.get("start_after")
        return start_after if isinstance(start_after, str) and start_after else None
