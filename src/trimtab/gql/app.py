"""``/graphql`` as one ASGI app: the secret-key guard, size bounds, then strawberry.

HTTP: ``POST /graphql`` with ``Authorization: Bearer <secret key>`` (the admin routes' guard:
401 without it, 403 when no secret key is configured); a body over ``site.max_body_bytes`` is
a 413. WebSocket: the ``graphql-transport-ws`` protocol; the key comes in the handshake's
``Authorization`` header or, from a browser (which cannot set headers on a WebSocket), in the
``connection_init`` payload as ``{"authorization": "Bearer sk_…"}``. A socket without it is
closed with ``4403 Forbidden`` (the protocol's code), one that subscribes before
``connection_init`` with ``4401``, one that sends nothing within
``limits.ws_handshake_timeout_s`` with ``4408``. At most ``MAX_SOCKETS`` GraphQL sockets are
open per process (more are closed with ``4429``) and ``MAX_OPERATIONS`` operations per socket.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from trimtab.admin import same_key
from trimtab.gql.schema import build_schema

MAX_SOCKETS = 32  # open GraphQL WebSockets per process
MAX_OPERATIONS = 5  # operations (subscriptions) in flight on one socket


def _bearer(value: Any) -> str:
    return value.removeprefix("Bearer ").strip() if isinstance(value, str) else ""


def request_problem(body: bytes) -> str:
    """Why a ``POST /graphql`` body is not a GraphQL request ("" when it is one).

    strawberry expects a JSON object and fails on anything else (``null``, a list, a
    ``query`` that is not text), so the shape is checked first, naming the field.

    >>> request_problem(b'{"query": "{ slots { name } }", "variables": null}')
    ''
    >>> request_problem(b'null')
    'the body must be a JSON object with a "query"'
    >>> request_problem(b'{"query": 3}')
    '`$.query` must be a string'
    """
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return f"the body is not JSON: {exc}"
    except (UnicodeDecodeError, RecursionError):
        return "the body is not JSON: not valid UTF-8, or nested too deeply"
    if not isinstance(data, dict) or "query" not in data:
        return 'the body must be a JSON object with a "query"'
    if not isinstance(data["query"], str):
        return "`$.query` must be a string"
    if not isinstance(data.get("variables", {}), dict | None):
        return "`$.variables` must be an object"
    if not isinstance(data.get("operationName", ""), str | None):
        return "`$.operationName` must be a string"
    return ""


class GraphQLMetrics:
    """Prometheus series of the GraphQL API, in the collector's registry (docs/ecosystem.md,
    "Metrics": base units, ``_total`` counters, labels with a few fixed values)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "trimtab_graphql_operations_total",
            "GraphQL operations by type and outcome (ok, refused before running, error)",
            ["operation", "outcome"],
            registry=registry,
        )
        self.subscriptions = Gauge(
            "trimtab_graphql_subscriptions", "Open GraphQL subscriptions", registry=registry
        )
        self.sockets = Gauge(
            "trimtab_graphql_sockets", "Open GraphQL WebSockets", registry=registry
        )


class _View(GraphQL[dict[str, Any], None]):
    """strawberry's ASGI view with trimtab's context and the WebSocket's key check."""

    def __init__(self, collector: Any, metrics: GraphQLMetrics) -> None:
        self.metrics = metrics
        super().__init__(
            build_schema(),
            graphql_ide=None,  # the IDE page loads scripts from a CDN: not from a self-hosted box
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=collector.limits.ws_handshake_timeout_s),
            max_subscriptions_per_connection=MAX_OPERATIONS,
        )
        self.collector = collector

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        return {
            "request": request,
            "response": response,
            "collector": self.collector,
            "metrics": self.metrics,
        }

    async def on_ws_connect(self, context: dict[str, Any]) -> UnsetType | dict[str, object] | None:
        secret = self.collector.admin.secret() or ""  # the admin routes' key, read now
        params = context.get("connection_params") or {}
        request = context["request"]
        supplied = _bearer(params.get("authorization") or params.get("Authorization")) or (
            _bearer(request.headers.get("authorization", ""))
        )
        if not secret or not supplied or not same_key(supplied, secret):
            self.collector.metrics.rejected.labels("ws4403").inc()
            raise ConnectionRejectionError()
        return cast(UnsetType, UNSET)


class GraphQLApp:
    """``POST /graphql`` and ``WS /graphql`` over one collector."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector
        self.metrics = GraphQLMetrics(collector.metrics.registry)
        self.view = _View(collector, self.metrics)
        self.sockets = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        denied = self.collector.admin.refusal(request)
        if denied is not None:
            self.collector.metrics.rejected.labels(str(denied.status_code)).inc()
            await denied(scope, receive, send)
            return
        limit = self.collector.site.max_body_bytes
        too_large = JSONResponse(
            {"error": f"body larger than {limit} bytes (site.max_body_bytes)"},
            413,
            headers={"Connection": "close"},
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self.collector.metrics.rejected.labels("413").inc()
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    self.collector.metrics.rejected.labels("413").inc()
                    await too_large(scope, receive, send)
                    return
                chunks.append(chunk)
        except ClientDisconnect:
            return
        body = b"".join(chunks)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        problem = "Content-Type must be application/json" if media != "application/json" else ""
        problem = problem or request_problem(body)
        if problem:
            self.collector.metrics.rejected.labels("400").inc()
            await JSONResponse({"error": f"bad GraphQL request: {problem}"}, 400)(
                scope, receive, send
            )
            return
        replayed = False

        async def replay() -> Message:
            """The body already read, once; then whatever the client does next."""
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.view(scope, replay, send)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.sockets >= MAX_SOCKETS:
            ws = WebSocket(scope, receive, send)
            offered = scope.get("subprotocols") or []
            protocol = GRAPHQL_TRANSPORT_WS_PROTOCOL
            await ws.accept(subprotocol=protocol if protocol in offered else None)
            self.collector.metrics.rejected.labels("ws4429").inc()
            await ws.close(4429, f"too many GraphQL sockets open (at most {MAX_SOCKETS})")
            return
        self.sockets += 1
        self.metrics.sockets.inc()
        try:
            await self.view(scope, receive, send)
        finally:
            self.sockets -= 1
            self.metrics.sockets.dec()


__all__ = ["MAX_OPERATIONS", "MAX_SOCKETS", "GraphQLApp"]
