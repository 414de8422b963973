"""The OpenFeature Remote Evaluation Protocol (OFREP), so any OFREP provider reads trimtab.

* ``POST /ofrep/v1/evaluate/flags/{key}`` — one flag: ``{"context": {"targetingKey": …, …}}``
  → ``{"key", "value", "variant", "reason", "metadata"}``; 400 with ``errorCode``
  ``PARSE_ERROR`` / ``INVALID_CONTEXT`` / ``TARGETING_KEY_MISSING`` / ``GENERAL``, 404 with
  ``FLAG_NOT_FOUND``.
* ``POST /ofrep/v1/evaluate/flags`` — every flag for one context: ``{"flags": […]}`` (a slot
  that is not a flag is listed with ``errorCode: GENERAL`` and why), with an ``ETag``; a
  matching ``If-None-Match`` gets a 304.
* ``GET /ofrep/v1/configuration`` — what this server supports.

Credentials: the site's public key as ``Authorization: Bearer pk_…``, ``X-API-Key`` or
``?key=``; 401 without it. The rate limit answers 429 with ``Retry-After`` (seconds). Flags
are evaluated by :mod:`trimtab.flags` (trimtab's engine, from the context alone).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trimtab.flags import INVALID_CONTEXT, PARSE_ERROR, FlagError, LiveFlags, attributes_of

_json = msgspec.json.Encoder(order="deterministic")
_decode = msgspec.json.Decoder()


def _success(r: Any) -> dict[str, Any]:
    return {
        "key": r.key,
        "value": r.value,
        "variant": r.variant,
        "reason": r.reason,
        "metadata": r.metadata,
    }


def _failure(e: FlagError) -> dict[str, Any]:
    return {"key": e.key, "errorCode": e.code, "errorDetails": e.details}


def _key_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.query_params.get("key")


def routes(collector: Any) -> list[Route]:
    """The OFREP routes over a :class:`trimtab.collector.Collector`."""
    flags = LiveFlags(lambda: collector.runtime.config)
    counted = collector.metrics.flag_evaluations

    async def admit(request: Request) -> tuple[dict[str, str], Response | None, Any]:
        origin = request.headers.get("origin")
        cors = collector.cors_headers(origin)
        if cors:
            cors["Access-Control-Allow-Headers"] = (
                "Content-Type, Authorization, X-API-Key, If-None-Match"
            )
            cors["Access-Control-Expose-Headers"] = "ETag, Retry-After"
        client = request.client.host if request.client else "unknown"
        status, reason = collector.check_public(_key_of(request), origin, client)
        if status:
            collector.metrics.rejected.labels(str(status)).inc()
            headers = dict(cors)
            if status == 429:
                headers["Retry-After"] = str(collector.limiter.retry_after())
            return cors, JSONResponse({"errorDetails": reason}, status, headers=headers), None
        limit = collector.site.max_body_bytes
        raw = await request.body()
        if len(raw) > limit:
            collector.metrics.rejected.labels("413").inc()
            return (
                cors,
                JSONResponse({"errorDetails": f"body larger than {limit} bytes"}, 413, cors),
                None,
            )
        try:
            body = _decode.decode(raw) if raw.strip() else {}
        except msgspec.DecodeError as exc:
            raise FlagError("", PARSE_ERROR, f"body: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise FlagError("", INVALID_CONTEXT, "body: expected an object with context")
        return cors, None, attributes_of(body.get("context"))

    async def one(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            cors, refused, attrs = await admit(request)
            if refused is not None:
                return refused
            result = flags.get().evaluate(key, attrs)
            counted.labels("ofrep", result.reason.lower()).inc()
        except FlagError as exc:
            counted.labels("ofrep", "error").inc()
            exc.key = key
            status = 404 if exc.code == "FLAG_NOT_FOUND" else 400
            return Response(_json.encode(_failure(exc)), status, media_type="application/json")
        return Response(_json.encode(_success(result)), media_type="application/json", headers=cors)

    async def bulk(request: Request) -> Response:
        try:
            cors, refused, attrs = await admit(request)
            if refused is not None:
                return refused
        except FlagError as exc:
            body = {"errorCode": exc.code, "errorDetails": exc.details}
            return Response(_json.encode(body), 400, media_type="application/json")
        items = []
        for r in flags.get().evaluate_all(attrs):
            if isinstance(r, FlagError):
                counted.labels("ofrep", "error").inc()
                items.append(_failure(r))
            else:
                counted.labels("ofrep", r.reason.lower()).inc()
                items.append(_success(r))
        encoded = _json.encode({"flags": items})
        etag = '"' + hashlib.sha256(encoded).hexdigest()[:32] + '"'
        headers = {**cors, "ETag": etag, "Cache-Control": "no-cache"}
        match = request.headers.get("if-none-match", "")
        if any(t.strip().removeprefix("W/") in (etag, "*") for t in match.split(",") if t):
            return Response(status_code=304, headers=headers)
        return Response(encoded, media_type="application/json", headers=headers)

    async def configuration(request: Request) -> Response:
        origin = request.headers.get("origin")
        client = request.client.host if request.client else "unknown"
        status, reason = collector.check_public(_key_of(request), origin, client)
        if status:
            return JSONResponse({"errorDetails": reason}, status)
        return JSONResponse(
            {
                "name": "trimtab",
                "capabilities": {
                    "cacheInvalidation": {
                        "polling": {"enabled": True, "minPollingIntervalMs": 1000}
                    },
                    "flagEvaluation": {
                        "supportedTypes": ["boolean", "string", "int", "float", "object"]
                    },
                },
            }
        )

    async def preflight(request: Request) -> Response:
        cors = collector.cors_headers(request.headers.get("origin"))
        if not cors:
            return JSONResponse({"errorDetails": "origin not allowed"}, status_code=403)
        cors["Access-Control-Allow-Headers"] = (
            "Content-Type, Authorization, X-API-Key, If-None-Match"
        )
        return Response(status_code=204, headers=cors)

    return [
        Route("/ofrep/v1/evaluate/flags/{key}", one, methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags/{key}", preflight, methods=["OPTIONS"]),
        Route("/ofrep/v1/evaluate/flags", bulk, methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags", preflight, methods=["OPTIONS"]),
        Route("/ofrep/v1/configuration", configuration, methods=["GET"]),
    ]
