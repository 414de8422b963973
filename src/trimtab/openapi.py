"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

Schemas of what the browser sends (events, decide requests) come from the msgspec structs that
validate them (:func:`msgspec.json.schema_components`), so the document and the validation
cannot drift apart; answers are described by small structs here. Every HTTP route of the app
is in the document — :func:`document` walks the app's routes, so a route added later is
listed (with a generic description) even before someone describes it here; a test checks it.
The WebSocket ``/v1/live`` is described in ``info.description`` (OpenAPI has no WebSocket
operations) and in ``docs/protocol.md``.

>>> doc = document([], public_key="pk_demo")
>>> doc["openapi"], sorted(doc["components"]["securitySchemes"])
('3.1.0', ['consoleSession', 'publicKey', 'secretKey'])
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from trimtab.events import AnyEvent


class Rejection(msgspec.Struct):
    """Why one event of a batch was refused (the others are kept)."""

    index: int
    path: str
    reason: str


class EventsAnswer(msgspec.Struct):
    accepted: int
    rejected: list[Rejection]


class DecisionOut(msgspec.Struct, kw_only=True):
    """One slot's decision, as the page receives it."""

    slot: str
    variant: str
    payload: dict[str, Any] | None = None
    decision_id: str
    source: Literal[
        "force", "experiment", "policy", "default", "holdout", "no_consent", "degraded", "qa"
    ]
    rule_id: str = ""
    propensity: float
    reason: str = ""
    why: str = ""


class DecideAnswer(msgspec.Struct, kw_only=True):
    decisions: list[DecisionOut]
    triggers: dict[str, Any] = {}
    accepted: int = 0
    rejected: list[Rejection] = []
    visitor_id: str = msgspec.field(default="")


class ErrorAnswer(msgspec.Struct):
    """Every refusal: a 4xx (or 503) naming the reason."""

    error: str


def _components() -> dict[str, Any]:
    from trimtab.collector import Hello  # the decide request is a hello

    (_, _, _, _, _), schemas = msgspec.json.schema_components(
        (list[AnyEvent], Hello, EventsAnswer, DecideAnswer, ErrorAnswer),
        ref_template="#/components/schemas/{name}",
    )
    schemas["Hello"]["title"] = "DecideRequest"
    schemas["Hello"]["properties"]["events"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Event"},
        "description": "the page's first events, logged and applied before deciding",
    }
    kinds = [
        name
        for name in schemas
        if name not in ("Hello", "EventsAnswer", "DecideAnswer", "ErrorAnswer", "Rejection")
        and name != "DecisionOut"
    ]
    schemas["Event"] = {
        "description": "One event; `kind` says which (docs/protocol.md).",
        "anyOf": [{"$ref": f"#/components/schemas/{k}"} for k in sorted(kinds)],
        "discriminator": {"propertyName": "kind"},
    }
    return schemas


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _refusals(*codes: int) -> dict[str, Any]:
    why = {
        400: "the body is not what the route takes (names the field)",
        401: "missing or unknown key",
        403: "origin not in the allow-list, or the route is off",
        404: "no such thing",
        409: "the base version is not the current one",
        413: "body larger than site.max_body_bytes",
        422: "the content is not valid (names the path)",
        429: "rate limit: see Retry-After",
        503: "a store did not answer: nothing was done or acknowledged; see Retry-After",
    }
    return {str(c): {"description": why[c], "content": _json("ErrorAnswer")} for c in codes}


PUBLIC: list[dict[str, list[str]]] = [{"publicKey": []}]
SECRET: list[dict[str, list[str]]] = [{"secretKey": []}]
CONSOLE: list[dict[str, list[str]]] = [{"consoleSession": []}]
ANY_JSON = {"application/json": {"schema": {"type": "object"}}}
OK_JSON = {"200": {"description": "OK", "content": ANY_JSON}}

# Hand-described operations: (method, path) -> operation.
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/events"): {
        "summary": "A batch of events",
        "description": "Valid events are kept even when others are rejected; a 200 means "
        "every accepted event is durable (docs/reliability.md). With signed ids required "
        "(the default), each `user_id` must be a signed visitor id (docs/security.md).",
        "security": PUBLIC,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                }
            },
        },
        "responses": {
            "200": {"description": "accepted, rejected", "content": _json("EventsAnswer")},
            **_refusals(400, 401, 403, 413, 429, 503),
        },
    },
    ("post", "/v1/decide"): {
        "summary": "Decisions for a page's slots (and its first events)",
        "description": "Without a valid signed visitor id the answer carries `visitor_id`, a "
        "fresh one to use from then on.",
        "security": PUBLIC,
        "requestBody": {"required": True, "content": _json("Hello")},
        "responses": {
            "200": {"description": "the decisions", "content": _json("DecideAnswer")},
            **_refusals(400, 401, 403, 413, 429, 503),
        },
    },
    ("get", "/t.js"): {
        "summary": "The tracker script (minified when served)",
        "responses": {
            "200": {"description": "JavaScript", "content": {"text/javascript": {"schema": {}}}}
        },
    },
    ("get", "/health"): {
        "summary": "ok or degraded, with the reasons",
        "responses": OK_JSON,
    },
    ("get", "/metrics"): {
        "summary": "Prometheus metrics",
        "responses": {"200": {"description": "text", "content": {"text/plain": {"schema": {}}}}},
    },
    ("get", "/openapi.json"): {"summary": "This document", "responses": OK_JSON},
    ("post", "/v1/admin/reload"): {
        "summary": "Read the config file again",
        "security": SECRET,
        "responses": {**OK_JSON, **_refusals(401, 403, 422)},
    },
    ("get", "/v1/admin/decisions"): {
        "summary": "The latest logged decisions (of one user)",
        "security": SECRET,
        "parameters": [
            {"name": "user_id", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        ],
        "responses": {"200": {"description": "decision records", "content": ANY_JSON}},
    },
    ("get", "/v1/admin/features"): {
        "summary": "What trimtab knows about a user now",
        "security": SECRET,
        "parameters": [
            {"name": "user_id", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "session_id", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {**OK_JSON, **_refusals(400, 401, 403, 503)},
    },
    ("post", "/graphql"): {
        "summary": "GraphQL: slots, rules, experiments, visitors, decisions",
        "description": "A GraphQL request (the schema by introspection; docs/ecosystem.md). "
        "Depth, tokens, aliases and cost are limited: a query over them is refused with the "
        "limit in `errors`. The subscription `decisions` runs over the WebSocket `/graphql` "
        "(protocol graphql-transport-ws).",
        "security": SECRET,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["query"],
                        "properties": {
                            "query": {"type": "string"},
                            "variables": {"type": ["object", "null"]},
                            "operationName": {"type": ["string", "null"]},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {"description": "`data` and/or `errors`", "content": ANY_JSON},
            **_refusals(400, 401, 403, 413),
        },
    },
    ("get", "/v1/admin/latency"): {
        "summary": "Arrival-to-push latency of the live loop",
        "security": SECRET,
        "parameters": [{"name": "reset", "in": "query", "schema": {"type": "string"}}],
        "responses": OK_JSON,
    },
    ("delete", "/v1/users/{user_id}"): {
        "summary": "Erase a user from every store (any id, `/` included)",
        "security": SECRET,
        "responses": {**OK_JSON, **_refusals(401, 403, 503)},
    },
}

_SUMMARIES = {
    "/v1/admin/models": "Trained models and their versions",
    "/v1/admin/segments": "Micro-segments and their report",
    "/v1/admin/models/{name}/stage": "Stage a model version",
    "/v1/admin/models/{name}/rollback": "Roll a model back",
    "/v1/admin/models/{name}/v{version}/{plot}": "A plot of a model version",
    "/v1/admin/config": "The current config version (GET) or a new one (PUT)",
    "/v1/admin/config/validate": "Validate a config",
    "/v1/admin/config/versions": "The config history",
    "/v1/admin/config/versions/{version}": "One config version",
    "/v1/admin/config/rollback": "Make an earlier config version current",
    "/v1/admin/config/dry-run": "How a candidate config would decide the last decisions",
    "/api/features/{client_key}": "GrowthBook SDK payload",
    "/sub/{client_key}": "GrowthBook server-sent events (a stream)",
    "/api/eval/{client_key}": "GrowthBook remote evaluation",
    "/ofrep/v1/evaluate/flags/{key}": "OpenFeature (OFREP): evaluate one flag",
    "/ofrep/v1/evaluate/flags": "OpenFeature (OFREP): evaluate every flag",
    "/ofrep/v1/configuration": "OpenFeature (OFREP): provider configuration",
}

DESCRIPTION = """trimtab's HTTP API. Browsers use the public key (`?key=pk_…`); the admin
routes take the secret key (`Authorization: Bearer sk_…`); the console its session cookie.
Besides these routes the tracker speaks WebSocket at `GET /v1/live?key=pk_…` (hello, events,
acks, pushed decisions: docs/protocol.md), and GraphQL subscriptions at `GET /graphql`
(graphql-transport-ws, the secret key: docs/ecosystem.md). The threat model is
docs/security.md."""


def _template(path: str) -> tuple[str, list[dict[str, Any]]]:
    """Starlette's ``{name:convertor}`` as OpenAPI's ``{name}``, with the path parameters."""
    params = []
    for name, convertor in re.findall(r"{(\w+)(?::(\w+))?}", path):
        schema = {"type": "integer"} if convertor == "int" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return re.sub(r"{(\w+):\w+}", r"{\1}", path), params


def _security(path: str) -> list[dict[str, list[str]]] | None:
    if path.startswith(("/v1/admin", "/v1/users")):
        return SECRET
    if path.startswith(("/console/api", "/console/stream", "/console/logout")):
        return CONSOLE
    if "{client_key}" in path:
        return None  # the key is the path parameter
    if path.startswith(("/v1/", "/ofrep/")):
        return PUBLIC
    return None


def _generic(method: str, path: str, endpoint: Any) -> dict[str, Any]:
    doc = (getattr(endpoint, "__doc__", None) or "").strip().splitlines()
    summary = _SUMMARIES.get(path) or (doc[0] if doc else f"{method.upper()} {path}")
    op: dict[str, Any] = {"summary": summary, "responses": {**OK_JSON, **_refusals(401, 403)}}
    security = _security(path)
    if security:
        op["security"] = security
    if method == "options":
        op["summary"] = "CORS preflight"
        op["responses"] = {"204": {"description": "allowed"}, **_refusals(403)}
        op.pop("security", None)
    elif method in ("post", "put"):
        op["requestBody"] = {"content": ANY_JSON}
        op["responses"].update(_refusals(400, 404, 409, 413, 422, 429))
    return op


def _walk(routes: list[Any], prefix: str = "") -> list[tuple[str, set[str], Any]]:
    from starlette.routing import Mount, Route

    out: list[tuple[str, set[str], Any]] = []
    for route in routes:
        if isinstance(route, Route):
            out.append((prefix + route.path, set(route.methods or ()), route.endpoint))
        elif isinstance(route, Mount):
            if route.routes:
                out.extend(_walk(list(route.routes), prefix + route.path))
            else:  # static files
                out.append((prefix + route.path + "/{path:path}", {"GET"}, None))
    return out


def document(routes: list[Any], public_key: str = "", version: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document for an app's routes."""
    paths: dict[str, dict[str, Any]] = {}
    for raw_path, methods, endpoint in _walk(routes):
        path, params = _template(raw_path)
        for method in sorted(m.lower() for m in methods if m != "HEAD"):
            op = dict(_OPERATIONS.get((method, path)) or _generic(method, path, endpoint))
            op.setdefault("operationId", f"{method}_{re.sub(r'[^a-z0-9]+', '_', path.lower())}")
            op.setdefault("summary", path)
            if params:
                op["parameters"] = params + list(op.get("parameters", []))
            if public_key:
                for param in op.get("parameters", []):
                    if param["name"] == "client_key":
                        param["example"] = public_key
            paths.setdefault(path, {})[method] = op
    public: dict[str, Any] = {"type": "apiKey", "in": "query", "name": "key"}
    if public_key:
        public["description"] = f"The site's public key (this site: `{public_key}`)."
    return {
        "openapi": "3.1.0",
        "info": {"title": "trimtab", "version": version or "0", "description": DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "publicKey": public,
                "secretKey": {"type": "http", "scheme": "bearer", "description": "sk_…"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": "tt_console"},
            },
        },
    }
