"""Which source errors are worth Dagster's run retries, and which fail the step at once.

A throttled or failing source (:class:`~connectors.http.SourceUnavailable`)
may recover, so the retry policy applies. A missing secret, refused
credentials, a missing bucket or a wrong setting will not: retrying only
delays the message. Those become a ``dg.Failure`` without retries, whose
description is the connector's own message.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from connectors.errors import ConnectorError
from connectors.http import SourceUnavailable


@contextmanager
def permanent_source_errors() -> Iterator[None]:
    try:
        yield
    except SourceUnavailable:
        raise
    except ConnectorError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
