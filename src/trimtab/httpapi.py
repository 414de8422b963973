"""The collector's HTTP handlers, one small method per route over the :class:`Collector`.

Public routes (``POST /v1/events``, ``POST /v1/decide`` and their CORS preflights) pass
:meth:`HttpApi.admit` first: site key, origin allow-list, rate limit, then the body within the
size limit and the request deadline. Admin routes are plain handlers listed in
:meth:`HttpApi.admin_routes`, which puts them behind the one admin guard
(:mod:`trimtab.admin`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trimtab.config import ConfigError
from trimtab.decide import decision_json
from trimtab.events import BatchError, EventError
from trimtab.store.sqlite import StorageError
from trimtab.wire import HELLO, JSON, BadMessage, decode_message, error, query_int

if TYPE_CHECKING:
    from trimtab.collector import Collector


def rejections(errors: list[EventError]) -> list[dict[str, Any]]:
    """The refused events of a batch as the answer lists them."""
    return [{"index": e.index, "path": e.path, "reason": e.reason} for e in errors]


def gpc(request: Request) -> bool:
    """Whether the browser sent Global Privacy Control (honoured under implied consent)."""
    return request.headers.get("sec-gpc", "").strip() == "1"


class HttpApi:
    """The HTTP routes of one collector (the WebSocket is :mod:`trimtab.livesocket`)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._openapi: bytes | None = None

    def public_routes(self) -> list[BaseRoute]:
        return [
            Route("/openapi.json", self.openapi),
            Route("/v1/events", self.events, methods=["POST"]),
            Route("/v1/events", self.preflight, methods=["OPTIONS"]),
            Route("/v1/decide", self.decide, methods=["POST"]),
            Route("/v1/decide", self.preflight, methods=["OPTIONS"]),
        ]

    def service_routes(self) -> list[BaseRoute]:
        return [
            Route("/t.js", self.tracker),
            Route("/health", self.health),
            Route("/metrics", self.metrics),
        ]

    def admin_routes(self) -> list[Route]:
        return self.collector.admin.routes(
            [
                Route("/v1/admin/reload", self.reload, methods=["POST"]),
                Route("/v1/admin/decisions", self.recent_decisions),
                Route("/v1/admin/latency", self.latency),
                Route("/v1/admin/features", self.features),
                Route("/v1/users/{user_id:path}", self.erase, methods=["DELETE"]),  # any id
            ]
        )

    # -- public routes -----------------------------------------------------------------------
    async def admit(self, request: Request) -> tuple[dict[str, str], Response | None, bytes]:
        """Key, origin, rate and size checks of a public route; the body when admitted."""
        collector = self.collector
        origin = request.headers.get("origin")
        cors = collector.cors_headers(origin)
        client = request.client.host if request.client else "unknown"
        status, reason = collector.check_public(request.query_params.get("key"), origin, client)
        if status:
            collector.metrics.rejected.labels(str(status)).inc()
            headers = (
                {**cors, "Retry-After": str(collector.limiter.retry_after())}
                if status == 429
                else cors
            )
            return cors, error(status, reason, headers), b""
        limit = collector.site.max_body_bytes
        closing = {**cors, "Connection": "close"}  # the rest of the body is not read
        too_large = f"body larger than {limit} bytes (site.max_body_bytes)"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            collector.metrics.rejected.labels("413").inc()
            return cors, error(413, too_large, closing), b""
        # The limit holds while the body streams in (a chunked body declares no length), and
        # the whole body must arrive within the request deadline.
        chunks: list[bytes] = []
        size = 0
        seconds = collector.limits.http_request_timeout_s
        try:
            async with asyncio.timeout(seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        collector.metrics.rejected.labels("413").inc()
                        return cors, error(413, too_large, closing), b""
                    chunks.append(chunk)
        except TimeoutError:
            collector.metrics.rejected.labels("408").inc()
            return cors, error(408, f"body not received within {seconds:g} s", closing), b""
        except ClientDisconnect:
            return cors, error(400, "client went away before the body arrived", closing), b""
        return cors, None, b"".join(chunks)

    def _not_stored(self, exc: StorageError, cors: dict[str, str]) -> Response:
        """Nothing acknowledged: the tracker keeps the batch and sends it again later."""
        self.collector.metrics.rejected.labels("503").inc()
        retry = {**cors, "Retry-After": str(exc.retry_after_s)}
        return error(503, f"events not stored, try again: {exc}", retry)

    async def events(self, request: Request) -> Response:
        collector = self.collector
        cors, refused, body = await self.admit(request)
        if refused is not None:
            return refused
        started = time.perf_counter()
        try:
            accepted, errors, changed = await collector.accept_events(body, gpc=gpc(request))
        except BatchError as exc:
            return error(400, str(exc), cors)
        except StorageError as exc:
            return self._not_stored(exc, cors)
        await collector.push(changed, started)
        collector.metrics.ingest_seconds.observe(time.perf_counter() - started)
        return JSONResponse({"accepted": accepted, "rejected": rejections(errors)}, headers=cors)

    async def decide(self, request: Request) -> Response:
        collector = self.collector
        cors, refused, raw = await self.admit(request)
        if refused is not None:
            return refused
        try:
            body = decode_message(HELLO, raw)
        except BadMessage as exc:
            return error(400, f"bad decide request: {exc}", cors)
        problem = collector.slots_problem(body)
        if problem:
            return error(400, f"bad decide request: {problem}", cors)
        sent_gpc = gpc(request)
        bound, issued = collector.identify(body)
        page = collector.page_of(body, bound, gpc=sent_gpc)
        try:
            decisions, triggers, ack = await collector.open_page(
                page, bound, body.events, gpc=sent_gpc
            )
        except BatchError as exc:
            return error(400, f"bad decide request: events: {exc}", cors)
        except StorageError as exc:
            return self._not_stored(exc, cors)
        answer: dict[str, Any] = {"decisions": [decision_json(d) for d in decisions]}
        answer.update(collector.force_answer(page))
        if issued:
            answer["visitor_id"] = issued
        if triggers:
            answer["triggers"] = triggers
        if ack is not None:
            answer["accepted"] = ack[0]
            answer["rejected"] = rejections(ack[1])
        return JSONResponse(answer, headers=cors)

    async def preflight(self, request: Request) -> Response:
        cors = self.collector.cors_headers(request.headers.get("origin"))
        if not cors:
            return error(403, "origin not allowed")
        return Response(status_code=204, headers=cors)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 document of every HTTP route (trimtab.openapi)."""
        if self._openapi is None:
            from trimtab import __version__
            from trimtab.openapi import document

            routes = list(request.app.router.routes)
            built = document(routes, self.collector.site.public_key, __version__)
            self._openapi = JSON.encode(built)
        return Response(self._openapi, media_type="application/json")

    # -- the service's own routes ------------------------------------------------------------
    async def tracker(self, request: Request) -> Response:
        raw, packed = self.collector.tracker()
        headers = {"Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)

    async def health(self, request: Request) -> Response:
        collector = self.collector
        backends = collector.runtime.health()
        degraded = [reason for reason in (collector.degraded, backends.get("degraded")) if reason]
        return JSONResponse(
            {
                "status": "degraded" if degraded else "ok",
                "degraded": degraded,
                "uptime_s": round(time.time() - collector.started, 1),
                "live_connections": len(collector.hub),
                "decisions_pending": collector.runtime.decision_log.pending(),
                **{k: v for k, v in backends.items() if k != "degraded"},
            }
        )

    async def metrics(self, request: Request) -> Response:
        registry = self.collector.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- admin routes (behind the guard: see admin_routes) -----------------------------------
    async def reload(self, request: Request) -> Response:
        try:
            config = self.collector.runtime.reload()
        except ConfigError as exc:
            return error(422, str(exc))
        return JSONResponse({"reloaded": config.source, "slots": list(config.slots)})

    async def erase(self, request: Request) -> Response:
        collector = self.collector
        user = collector.gate.user_id(request.path_params["user_id"])
        try:
            counts = await collector.runtime.erase_async(user)
        except StorageError as exc:
            return error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        collector.gate.consents.pop(user, None)
        collector.feed.forget(user)
        return JSONResponse({"erased": user, **counts})

    async def recent_decisions(self, request: Request) -> Response:
        collector = self.collector
        await collector.runtime.decisions_written()
        raw = request.query_params.get("user_id")
        user = collector.gate.user_id(raw) if raw else None
        try:
            limit = query_int(request, "limit", 100, 1, 100_000)
        except BadMessage as exc:
            return error(400, str(exc))
        records = await asyncio.to_thread(collector.runtime.decision_log.read, user, limit)
        return Response(JSON.encode(records), media_type="application/json")

    async def features(self, request: Request) -> Response:
        """What trimtab knows about a user now: the attributes rules would see."""
        collector = self.collector
        raw = request.query_params.get("user_id")
        if not raw:
            return error(400, "pass ?user_id=… (and optionally &session_id=…)")
        user = collector.gate.user_id(raw)
        if not await collector.prepare({user}):
            return error(503, f"state unavailable: {collector.degraded}")
        session = request.query_params.get("session_id", "")
        return Response(
            JSON.encode(collector.runtime.features_of(user, session)),
            media_type="application/json",
        )

    async def latency(self, request: Request) -> Response:
        collector = self.collector
        samples = sorted(collector.push_latency_s)
        # a page's first decisions (hello or decide request), the last 10,000
        decided = sorted(seconds for _, seconds in collector.feed.decide_s)
        if request.query_params.get("reset"):
            collector.push_latency_s.clear()
            collector.feed.decide_s.clear()
        answer: dict[str, Any] = {"pushes": len(samples), "decides": len(decided)}
        if decided:
            answer["decide_median_us"] = statistics.median(decided) * 1e6
            answer["decide_p99_us"] = decided[min(len(decided) - 1, int(0.99 * len(decided)))] * 1e6
        if not samples:
            return JSONResponse(answer)

        def at(q: float) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6

        answer.update(
            median_us=statistics.median(samples) * 1e6,
            p90_us=at(0.90),
            p99_us=at(0.99),
            max_us=samples[-1] * 1e6,
        )
        return JSONResponse(answer)
