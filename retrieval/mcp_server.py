"""``trove mcp``: Trove as MCP tools (``search_knowledge``, ``get_document``), plus the
OpenAI-style function schema of ``search_knowledge``.

The server holds no permission logic: each tool call turns the *caller's* bearer
token into a principal with :meth:`RetrievalService.authenticate` and asks the
same :class:`~retrieval.service.RetrievalService` the HTTP API uses.

* **Streamable HTTP** (:func:`mcp_http_app`): the token comes from each request's
  ``Authorization: Bearer`` header; a request without a valid one is refused with
  401 before any tool runs (the SDK's bearer middleware, backed by the same
  verifier), and every tool call verifies it again. Failed authentications are
  limited per client address as on the HTTP API (429 once spent).
* **stdio** (:func:`run_stdio`): the process acts for one caller, whose token is
  given at launch (``--token`` or ``TROVE_TOKEN``) and verified on every call,
  so an expired token stops working mid-session.

Example (a client)::

    async with Client("http://127.0.0.1:8765/mcp") as client:   # with an auth header
        result = await client.call_tool("search_knowledge", {"query": "leave policy"})
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AnyHttpUrl

from core.acl import Principal
from retrieval.api.middleware import AddressBuckets, UnauthenticatedLimit
from retrieval.api.schemas import DocumentOut, FiltersIn, SearchKnowledgeArgs, SearchResponse
from retrieval.models import NO_FILTERS
from retrieval.service import RetrievalService, ServiceError

SERVER_NAME = "trove"
SEARCH_DESCRIPTION = (
    "Search the organisation's documents the current user may read. Returns the best "
    "passages, each with a citation (title, path, section, pages, deep link) to quote, "
    "and `low_confidence` when the evidence is weak: then say you are unsure or ask."
)
DOCUMENT_DESCRIPTION = (
    "Look up a document the current user may read by `doc_id`; with `around` (a chunk id "
    "from search results), also return that passage and its neighbours for context."
)

TokenSource = Callable[[Any], str | None]


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref``s with their ``$defs`` (function-calling APIs want one flat schema)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = copy.deepcopy(defs[ref.split("/")[-1]])
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**target, **extra})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def search_knowledge_tool_schema() -> dict[str, Any]:
    """The OpenAI-style tool (function) definition of ``search_knowledge``."""
    parameters = _inline_refs(SearchKnowledgeArgs.model_json_schema())
    parameters.pop("title", None)
    parameters.pop("description", None)
    return {
        "type": "function",
        "function": {
            "name": "search_knowledge",
            "description": SEARCH_DESCRIPTION,
            "parameters": parameters,
        },
    }


def _bearer(headers: Any) -> str | None:
    if not headers:
        return None
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def header_token(ctx: Any) -> str | None:
    """The caller's token from the HTTP request that carried this tool call."""
    try:
        headers = ctx.headers
    except (ValueError, AttributeError):  # no request context: not called over HTTP
        return None
    return _bearer(headers)


def fixed_token(token: str | None) -> TokenSource:
    """For stdio: the one caller's token, given at launch."""
    return lambda _ctx: token


def build_mcp_server(
    service: RetrievalService,
    token_source: TokenSource,
    *,
    auth: Any = None,
    token_verifier: Any = None,
) -> Any:
    """An ``MCPServer`` with the Trove tools; ``token_source(ctx)`` gives the caller's token."""
    server = MCPServer(
        SERVER_NAME,
        instructions=SEARCH_DESCRIPTION,
        auth=auth,
        token_verifier=token_verifier,
        log_level="WARNING",
    )

    def principal_of(ctx: Context) -> Principal:
        principal = service.authenticate(token_source(ctx))
        service.check_rate(principal)
        return principal

    @server.tool(name="search_knowledge", description=SEARCH_DESCRIPTION)
    def search_knowledge(
        query: str, ctx: Context, top_k: int = 8, filters: FiltersIn | None = None
    ) -> SearchResponse:
        args = SearchKnowledgeArgs(query=query, top_k=top_k, filters=filters)
        try:
            outcome = service.search(
                principal_of(ctx),
                args.query,
                top_k=args.top_k,
                filters=args.filters.to_filters() if args.filters else NO_FILTERS,
            )
        except ServiceError as exc:  # an expected refusal: its message goes to the caller
            raise ToolError(str(exc)) from exc
        return SearchResponse.from_outcome(outcome)

    @server.tool(name="get_document", description=DOCUMENT_DESCRIPTION)
    def get_document(
        doc_id: str, ctx: Context, around: str | None = None, window: int = 1
    ) -> DocumentOut:
        try:
            view = service.document(principal_of(ctx), doc_id, around=around, window=window)
        except ServiceError as exc:
            raise ToolError(str(exc)) from exc
        return DocumentOut.from_view(view)

    return server


class ServiceTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` over :meth:`RetrievalService.authenticate`."""

    def __init__(self, service: RetrievalService):
        self.service = service

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        try:
            principal = self.service.authenticate(token)
        except ServiceError:
            return None
        return AccessToken(token=token, client_id=principal.user, scopes=[], subject=principal.user)


def mcp_http_app(service: RetrievalService, *, host: str = "127.0.0.1", path: str = "/mcp") -> Any:
    """An ASGI app serving the tools over streamable HTTP (stateless, JSON responses)."""
    from mcp.server.auth.settings import AuthSettings

    auth = AuthSettings(
        # Metadata only: tokens come from your identity provider.
        issuer_url=AnyHttpUrl("http://127.0.0.1"),
        resource_server_url=None,
        validate_token_resource=False,
    )
    server = build_mcp_server(
        service, header_token, auth=auth, token_verifier=ServiceTokenVerifier(service)
    )
    app = server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=True,
        json_response=True,
        host=host,
        max_request_body_size=service.api.max_body_bytes,
    )

    def record_limited() -> None:
        service.audit.record("rate_limit", principal=None, outcome="limited:address")

    return UnauthenticatedLimit(
        app,
        buckets=AddressBuckets(service.api.unauthenticated_rate_limit_per_minute),
        prefixes=(path,),
        on_limited=record_limited,
    )


def run_stdio(service: RetrievalService, token: str | None) -> None:
    """Serve the tools on stdin/stdout for the one caller ``token`` names."""
    service.authenticate(token)  # fail at launch, not on the first call
    build_mcp_server(service, fixed_token(token)).run("stdio")
