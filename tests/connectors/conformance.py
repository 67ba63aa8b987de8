"""One contract, five sources: the conformance suite every connector passes.

The contract is :mod:`connectors.base` (``changes``, ``list_ids``, ``fetch``,
``close``). A connector's test class inherits :class:`ConnectorConformance` and
overrides one fixture, ``world``: a :class:`SourceWorld` adapter around the
connector's fake (a folder, the fake Confluence site, the fake Graph tenant,
moto, the fake website) that creates, changes, deletes and breaks documents by
key (``"keep/doc-1"``) and opens the connector on it. The suite checks:

* a full listing yields every document in scope exactly once, with ids stable
  across two listings, each fetchable at the version listed;
* cursor resume after a batch: a run interrupted after a batch and resumed
  from that batch's cursor sees every later change, nothing changed before the
  cursor again (incremental sources), and a ``complete`` run names everything;
* ``list_ids`` covers ``changes``: every document a run reports is listed at
  the same version, and a deleted document is no longer listed (and is named
  in ``deleted`` by sources that report deletions);
* ``include``/``exclude``: a document outside the scope is never yielded,
  listed, downloaded, or returned by ``fetch``;
* one document that cannot be read is that document's failure (in the batch,
  or a ``ConnectorError`` from ``fetch`` that is not a deletion); the run goes on;
* a secret never appears in an exception (text, repr, chained causes), a
  failure record, or a log line, when a credential is refused or the host is
  unreachable.

Whether a source is incremental is the connector's own statement: a run from
no cursor of a full-listing source ends with a ``complete`` batch, and one of an
incremental source does not; the adapter's :attr:`SourceWorld.full_listing`
says which to expect and the suite checks the connector agrees.

Connectors are constructed only by the ``open_*`` functions below, one per
connector, so a change of constructor is a one-line change here.
"""

from __future__ import annotations

import base64
import logging
import traceback
import typing
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from connectors.base import ChangeBatch, Connector, DocumentStamp
from connectors.confluence.connector import ConfluenceConnector
from connectors.credentials import Secret
from connectors.errors import ConnectorError, DocumentGone
from connectors.filesystem import FilesystemConnector
from connectors.models import DocumentFailure, SourceDocument
from connectors.s3.connector import S3Connector
from connectors.sharepoint.connector import SharePointConnector
from connectors.web.connector import WebConnector
from pipelines.config import SourceConfig

SOURCE = "src"

# -- building connectors: the one place each constructor is called -------------------------


def open_filesystem(config: SourceConfig) -> Connector:
    return FilesystemConnector(config.scope())


def open_confluence(config: SourceConfig, sleep: Callable[[float], None]) -> Connector:
    return ConfluenceConnector(config.scope(), config.confluence, sleep=sleep)


def open_sharepoint(config: SourceConfig, sleep: Callable[[float], None]) -> Connector:
    return SharePointConnector(config.scope(), config.sharepoint, sleep=sleep)


def open_s3(config: SourceConfig) -> S3Connector:
    return S3Connector(config.scope(), config.s3)


def open_web(config: SourceConfig, sleep: Callable[[float], None]) -> Connector:
    return WebConnector(config.scope(), config.web, sleep=sleep)


# -- running connectors --------------------------------------------------------------------


@dataclass
class Run:
    """What one call of ``changes`` yielded, batch by batch."""

    batches: list[ChangeBatch]
    start: str | None  # the cursor the run started from

    @property
    def documents(self) -> list[SourceDocument]:
        return [d for b in self.batches for d in b.documents]

    @property
    def ids(self) -> list[str]:
        """Document ids in the order yielded, repeats kept."""
        return [d.doc_id for d in self.documents]

    @property
    def latest(self) -> dict[str, SourceDocument]:
        """Each document as last reported."""
        return {d.doc_id: d for d in self.documents}

    @property
    def failures(self) -> dict[str, DocumentFailure]:
        return {f.doc_id: f for b in self.batches for f in b.failures}

    @property
    def deleted(self) -> set[str]:
        return {doc_id for b in self.batches for doc_id in b.deleted}

    @property
    def cursor(self) -> str | None:
        """The cursor to persist after the run (a batch's ``None`` keeps the previous one)."""
        cursor = self.start
        for batch in self.batches:
            cursor = batch.cursor if batch.cursor is not None else cursor
        return cursor

    @property
    def complete(self) -> bool:
        return bool(self.batches) and self.batches[-1].complete

    @property
    def reported_anything(self) -> bool:
        return any(b.documents or b.deleted or b.failures for b in self.batches)


def sync(connector: Connector, cursor: str | None = None) -> Run:
    """A whole run of ``changes`` from ``cursor``."""
    return Run(list(connector.changes(cursor)), cursor)


def interrupted_sync(connector: Connector, cursor: str | None) -> Run:
    """A run that dies once the first batch reporting a change is committed."""
    batches: list[ChangeBatch] = []
    changes = connector.changes(cursor)
    try:
        for batch in changes:
            batches.append(batch)
            if batch.documents or batch.deleted:
                break
    finally:
        close = getattr(changes, "close", None)  # the generator is abandoned, as in a crash
        if close is not None:
            close()
    return Run(batches, cursor)


def stamps(connector: Connector) -> dict[str, DocumentStamp]:
    """``list_ids`` by id; fails if an id is listed twice."""
    listed = list(connector.list_ids())
    repeated = [i for i, n in Counter(s.doc_id for s in listed).items() if n > 1]
    assert not repeated, f"list_ids names these documents more than once: {repeated}"
    return {s.doc_id: s for s in listed}


def assert_each_once(run: Run) -> None:
    repeated = [i for i, n in Counter(run.ids).items() if n > 1]
    assert not repeated, f"one run yielded these documents more than once: {repeated}"


def has_secret_field(model: type[BaseModel] | None) -> bool:
    """Whether a connector's configuration block holds a :class:`Secret` anywhere."""
    if model is None:
        return False
    return any(_mentions_secret(f.annotation) for f in model.model_fields.values())


def _mentions_secret(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return has_secret_field(annotation)
    return any(_mentions_secret(a) for a in typing.get_args(annotation))


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization: Basic`` value for a user and password (a leaked header shows it)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the adapter a connector's test class provides --------------------------------------------


@dataclass(frozen=True)
class CredentialCase:
    """A way to make the connector fail with a secret in hand (refused, or host unreachable)."""

    name: str
    open: Callable[[], Connector]
    # Evaluated after the attempt: tokens issued during it are secrets too.
    secrets: Callable[[], Iterable[str]]


class SourceWorld(ABC):
    """A connector's fake source, driven by document keys such as ``"keep/doc-1"``.

    A key is ``<folder>/<name>-<number>``; the adapter places it where its source
    keeps documents (a file, a page in a folder, a drive item, an object, a URL)
    and remembers the document id the connector should report for it.
    """

    # Every run re-lists the whole source and ends with a ``complete`` batch
    # (filesystem, S3, web); otherwise runs report only what changed since the cursor.
    full_listing: typing.ClassVar[bool]
    # A run names the documents deleted since its cursor in ``ChangeBatch.deleted``.
    reports_deletions: typing.ClassVar[bool]
    # The connector's configuration block (None: it has none).
    config_model: typing.ClassVar[type[BaseModel] | None]

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # key -> document id
        self.live: set[str] = set()  # keys of the documents that exist now
        self.revisions: Counter[str] = Counter()
        self.sleeps: list[float] = []  # what the connectors asked to sleep (nothing sleeps)

    def add(self, key: str) -> str:
        """Create the document ``key``; its id."""
        self.ids[key] = self._create(key, self.text(key))
        self.live.add(key)
        return self.ids[key]

    def add_all(self, keys: Iterable[str]) -> list[str]:
        return [self.add(key) for key in keys]

    def modify(self, key: str) -> None:
        self.revisions[key] += 1
        self._update(key, self.text(key))

    def delete(self, key: str) -> None:
        self._remove(key)
        self.live.discard(key)

    def text(self, key: str) -> str:
        """The document's text; every revision has another length (size stamps change too)."""
        revision = self.revisions[key]
        return f"Document {key}, revision {revision}. " + "More text. " * (revision + 1)

    def current_ids(self) -> set[str]:
        return {self.ids[key] for key in self.live}

    # -- what each adapter implements -------------------------------------------------------

    @abstractmethod
    def _create(self, key: str, text: str) -> str: ...

    @abstractmethod
    def _update(self, key: str, text: str) -> None: ...

    @abstractmethod
    def _remove(self, key: str) -> None: ...

    @abstractmethod
    def fail(self, key: str) -> None:
        """From now on, reading this one document fails (a 500 or 403, an unreadable file)."""

    @abstractmethod
    def open(
        self, *, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Connector:
        """The connector on this source (globs as :meth:`glob` writes them)."""

    @abstractmethod
    def glob(self, relative: str) -> str:
        """A glob on keys (``"skip/**"``) as a glob on the paths this connector reports."""

    @abstractmethod
    def content_reads(self, key: str) -> int:
        """How often the source was asked for this document's bytes."""

    def credential_cases(self) -> list[CredentialCase]:
        """Ways to make an operation fail while holding a secret (none: the source has none)."""
        return []


# -- the suite ----------------------------------------------------------------------------------

SEED = [f"keep/doc-{n}" for n in range(1, 7)]


class ConnectorConformance:
    """Mixin: inherit and override the ``world`` fixture (a fresh, empty :class:`SourceWorld`)."""

    @pytest.fixture
    def world(self) -> SourceWorld:
        raise NotImplementedError("a connector's test class overrides the `world` fixture")

    # -- full listing -------------------------------------------------------------------------

    def test_a_full_listing_yields_every_document_once_with_stable_ids(
        self, world: SourceWorld
    ) -> None:
        expected = set(world.add_all(SEED))
        first, second = world.open(), world.open()
        try:
            runs = [sync(first), sync(second)]
            for run in runs:
                assert_each_once(run)
                assert set(run.ids) == expected
                assert not run.failures and not run.deleted
                assert all(
                    d.source == SOURCE and d.doc_id.startswith(f"{SOURCE}:") for d in run.documents
                )
                # A first run says whether the source is a full listing (see the module doc).
                assert run.complete is world.full_listing
            assert {i: d.version for i, d in runs[0].latest.items()} == {
                i: d.version for i, d in runs[1].latest.items()
            }
            assert set(stamps(first)) == set(stamps(second)) == expected
            for doc in runs[0].documents:
                fetched = first.fetch(doc.doc_id)
                assert (fetched.doc_id, fetched.version) == (doc.doc_id, doc.version)
                assert fetched.content is not None or fetched.local_path is not None
        finally:
            first.close()
            second.close()

    # -- cursor resume --------------------------------------------------------------------------

    def test_a_run_resumed_after_a_batch_sees_each_later_change_once(
        self, world: SourceWorld
    ) -> None:
        world.add_all(SEED)
        connector = world.open()
        before = sync(connector)
        connector.close()
        added = world.add_all(["keep/new-1", "keep/new-2", "keep/new-3"])
        for key in ("keep/doc-2", "keep/doc-5"):
            world.modify(key)
        world.delete("keep/doc-3")
        changed = {*added, world.ids["keep/doc-2"], world.ids["keep/doc-5"]}
        gone = world.ids["keep/doc-3"]

        crashed = world.open()
        first = interrupted_sync(crashed, before.cursor)
        crashed.close()
        resumer = world.open()
        try:
            resumed = sync(resumer, first.cursor)
            current = stamps(resumer)
        finally:
            resumer.close()

        assert first.reported_anything and resumed.reported_anything, (
            "the run was not interrupted part way: give the adapter smaller pages"
        )
        assert_each_once(resumed)
        assert gone not in resumed.ids and gone not in first.ids
        assert set(current) == world.current_ids()
        both = Run([*first.batches, *resumed.batches], before.cursor)
        # Each changed document is reported, last at its current version.
        assert changed <= set(both.latest)
        assert {i: both.latest[i].version for i in changed} == {
            i: current[i].version for i in changed
        }
        if resumed.complete:
            assert set(resumed.ids) == world.current_ids(), "a complete run names every document"
        if world.full_listing:
            assert set(both.ids) == world.current_ids()
        else:
            # Incremental: every later change exactly once, nothing from before the cursor.
            assert Counter(both.ids) == Counter(changed)
            assert not resumed.complete
        if world.reports_deletions:
            assert gone in both.deleted

    # -- list_ids against changes ---------------------------------------------------------------

    def test_list_ids_covers_what_changes_reports_and_drops_deleted_documents(
        self, world: SourceWorld
    ) -> None:
        world.add_all(SEED[:4])
        connector = world.open()
        before = sync(connector)
        connector.close()
        world.modify("keep/doc-1")
        world.add("keep/new-1")
        world.delete("keep/doc-2")
        gone = world.ids["keep/doc-2"]

        connector, fresh = world.open(), world.open()
        try:
            after = sync(connector, before.cursor)
            # The pipeline asks the instance that just ran; a fresh one must agree.
            for listed in (stamps(connector), stamps(fresh)):
                assert set(listed) == world.current_ids()
                assert gone not in listed
                for run in (before, after):
                    for doc_id, doc in run.latest.items():
                        if doc_id == gone:
                            continue
                        if run is before and doc_id == world.ids["keep/doc-1"]:
                            continue  # modified since
                        assert doc_id in listed
                        assert (listed[doc_id].version, listed[doc_id].path) == (
                            doc.version,
                            doc.path,
                        )
        finally:
            connector.close()
            fresh.close()
        assert gone not in after.ids
        assert world.ids["keep/new-1"] in after.ids and world.ids["keep/doc-1"] in after.ids
        if world.reports_deletions:
            assert gone in after.deleted

    # -- include / exclude ------------------------------------------------------------------------

    def _assert_out_of_scope(
        self, world: SourceWorld, connector: Connector, inside: set[str], outside: list[str]
    ) -> None:
        run = sync(connector)
        listed = stamps(connector)
        out_ids = {world.ids[key] for key in outside}
        assert set(run.ids) == inside
        assert not out_ids & set(run.failures)
        assert set(listed) == inside
        assert {key: world.content_reads(key) for key in outside} == dict.fromkeys(outside, 0)

    def test_exclude_keeps_documents_out(self, world: SourceWorld) -> None:
        inside = set(world.add_all(["keep/doc-1", "keep/doc-2", "keep/doc-5"]))
        outside = ["skip/doc-3", "skip/doc-4"]
        world.add_all(outside)
        connector = world.open(exclude=[world.glob("skip/**")])
        try:
            self._assert_out_of_scope(world, connector, inside, outside)
        finally:
            connector.close()

    def test_include_keeps_other_documents_out(self, world: SourceWorld) -> None:
        inside = set(world.add_all(["keep/doc-1", "keep/doc-2", "keep/doc-5"]))
        outside = ["skip/doc-3", "skip/doc-4"]
        world.add_all(outside)
        connector = world.open(include=[world.glob("keep/**")])
        try:
            self._assert_out_of_scope(world, connector, inside, outside)
        finally:
            connector.close()

    def test_fetch_refuses_a_document_outside_the_scope(self, world: SourceWorld) -> None:
        # The pipeline fetches by id too (a retry of last run's failed download, a
        # document the index lost): an id from before an `exclude` was added must not
        # bring the document back. A DocumentGone, so the pipeline drops it for good:
        # a plain ConnectorError would be a failure retried on every run.
        world.add("keep/doc-1")
        out_id = world.add("skip/doc-2")
        connector = world.open(exclude=[world.glob("skip/**")])
        try:
            sync(connector)
            with pytest.raises(DocumentGone):
                connector.fetch(out_id)
        finally:
            connector.close()
        assert world.content_reads("skip/doc-2") == 0

    # -- one bad document -------------------------------------------------------------------------

    def test_one_unreadable_document_is_its_own_failure_and_the_others_go_on(
        self, world: SourceWorld
    ) -> None:
        ids = world.add_all(SEED[:5])
        bad = ids[2]  # in the middle of the listing
        world.fail(SEED[2])
        connector = world.open()
        try:
            run = sync(connector)  # never raises for one document
            assert_each_once(run)
            others = set(ids) - {bad}
            assert set(run.ids) - {bad} == others
            assert bad not in run.deleted, "a document that cannot be read is not deleted"
            if bad in run.failures:
                assert bad not in run.ids and run.failures[bad].reason
            else:
                # Listed without its bytes: the failure comes from fetch, never as "gone".
                listed = run.latest[bad]
                assert listed.content is None and listed.local_path is None
                with pytest.raises(ConnectorError) as refused:
                    connector.fetch(bad)
                assert not isinstance(refused.value, DocumentGone)
            for doc_id in sorted(others):
                fetched = connector.fetch(doc_id)
                assert fetched.content is not None or fetched.local_path is not None
        finally:
            connector.close()

    # -- secrets ----------------------------------------------------------------------------------

    def test_secrets_never_appear_in_errors_failures_or_logs(
        self, world: SourceWorld, caplog: pytest.LogCaptureFixture
    ) -> None:
        doc_id = world.add("keep/doc-1")
        cases = world.credential_cases()
        if not cases:
            assert not has_secret_field(world.config_model), (
                "the connector's configuration holds a secret: give its adapter credential cases"
            )
        caplog.set_level(logging.DEBUG, logger="connectors")
        for case in cases:
            caplog.clear()
            errors, failures = _attempt(case, doc_id)
            assert errors or failures, f"{case.name}: nothing failed"
            for exc in errors:
                assert isinstance(exc, ConnectorError), f"{case.name}: {exc!r}"
            exposed = "\n".join(
                [
                    *("".join(traceback.format_exception(e)) + repr(e) for e in errors),
                    *(f"{f.doc_id} {f.path} {f.reason}" for f in failures),
                    caplog.text,
                ]
            )
            secrets = [s for s in case.secrets() if s]
            assert secrets, f"{case.name}: no secret to look for"
            for secret in secrets:
                assert secret not in exposed, f"{case.name}: a secret appears in: {exposed}"


def _attempt(
    case: CredentialCase, doc_id: str
) -> tuple[list[BaseException], list[DocumentFailure]]:
    """Every read of the contract with the case's connector; what it raised and reported."""
    errors: list[BaseException] = []
    failures: list[DocumentFailure] = []
    try:
        connector = case.open()
    except Exception as exc:  # the exception is what the test checks
        return [exc], failures
    reads: list[Callable[[], object]] = [
        lambda: [failures.extend(b.failures) for b in connector.changes(None)],
        lambda: list(connector.list_ids()),
        lambda: connector.fetch(doc_id),
    ]
    try:
        for read in reads:
            try:
                read()
            except Exception as exc:  # the exception is what the test checks
                errors.append(exc)
    finally:
        connector.close()
    return errors, failures
