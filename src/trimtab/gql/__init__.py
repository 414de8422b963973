"""GraphQL at ``/graphql``, behind the secret key (``trimtab[graphql]``: strawberry).

Queries read the serving config's slots and rules, the experiments and their reports, one
visitor's features and logged decisions, and the live feed; a subscription streams decisions as
they are made (:mod:`trimtab.gql.schema`). Depth, tokens, aliases and cost are bounded before
a query runs (:mod:`trimtab.gql.cost`); auth and sockets are :mod:`trimtab.gql.app`'s. Without
the extra the route answers 501 naming it, and the rest of the server runs as before.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from trimtab.extras import MissingExtra, missing


def routes(collector: Any) -> list[BaseRoute]:
    """``POST /graphql`` and ``WS /graphql`` over a :class:`trimtab.collector.Collector`."""
    try:
        from trimtab.gql.app import GraphQLApp
    except ModuleNotFoundError as exc:
        error = missing(exc, "graphql", "the GraphQL API")
        if not isinstance(error, MissingExtra):
            raise
        return _unavailable(str(error))
    app = GraphQLApp(collector)
    return [Route("/graphql", app, methods=["POST"]), WebSocketRoute("/graphql", app)]


def _unavailable(reason: str) -> list[BaseRoute]:
    async def http(request: Request) -> Response:
        """GraphQL (needs the graphql extra)."""
        return JSONResponse({"error": reason}, 501)

    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(1011, reason[:120])

    return [Route("/graphql", http, methods=["POST"]), WebSocketRoute("/graphql", websocket)]


__all__ = ["routes"]
