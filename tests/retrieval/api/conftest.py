"""A real API server on loopback over a small multi-tenant index (no model), per module."""

from __future__ import annotations

import httpx
import pytest

from retrieval.api.app import create_app
from tests.retrieval.api.helpers import live_server, make_service, make_settings


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def service(workdir):
    svc = make_service(workdir, rate_limit_per_minute=100_000)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def app(workdir, service):
    # The shared server answers many deliberate 401s from 127.0.0.1; the address limit
    # itself is tested on its own app (test_unauthenticated_http.py).
    settings = make_settings(
        workdir, rate_limit_per_minute=100_000, unauthenticated_rate_limit_per_minute=100_000
    )
    return create_app(settings.api, service)


@pytest.fixture(scope="module")
def server(app):
    with live_server(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client
