"""GrowthBook-compatible endpoints, so unmodified GrowthBook SDKs run against trimtab.

* ``GET /api/features/{clientKey}`` — the SDK payload of every slot that has a GrowthBook form
  (:mod:`trimtab.gbpayload`), with an ``ETag``; ``If-None-Match`` gets a 304.
* ``GET /sub/{clientKey}`` — the server-sent event stream SDKs subscribe to: a ``features``
  event with the whole payload on connect and whenever the config changes (admin reload, file
  watch), a comment line every 15 s to keep proxies from closing it.
* ``POST /api/eval/{clientKey}`` — remote evaluation: trimtab's own engine decides every slot
  for the posted ``attributes`` and answers with the values, experiment decisions carrying
  their tracking data so the SDK's tracking callback fires.

The client key is the site's public key; the usual checks apply (origin allow-list, rate
limit, body size). Decisions made here are the SDK's, not trimtab's: they are not logged, and
no live features are read (``/v1/decide`` does both).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trimtab.config import SiteConfig
from trimtab.flags import FlagSet
from trimtab.gbpayload import export_feature, variant_value

KEEPALIVE_S = 15.0
POLL_S = 0.2  # how often the one watcher per app looks for a new config
_json = msgspec.json.Encoder(order="deterministic")
_body = msgspec.json.Decoder()


@dataclass
class Snapshot:
    """One config's GrowthBook payload, serialized once, and its flags (a non-logging engine)."""

    config: SiteConfig
    body: bytes
    etag: str
    slots: list[str]
    excluded: dict[str, str]
    flags: FlagSet = field(repr=False)


def build_snapshot(config: SiteConfig, now: float | None = None) -> Snapshot:
    flags = FlagSet(config)
    excluded = flags.excluded
    slots = [name for name in config.slots if name not in excluded]
    features = {name: export_feature(config, name) for name in slots}
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    payload = {
        "status": 200,
        "features": features,
        "dateUpdated": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "trimtab": {
            "excluded": excluded,
            "note": "slots decided by learning policies or by live attributes only trimtab "
            "computes are not GrowthBook features; /v1/decide serves them",
        },
    }
    body = _json.encode(payload)
    # weak: processes that built the same features at different times differ in dateUpdated only
    etag = 'W/"' + hashlib.sha256(_json.encode(features)).hexdigest()[:32] + '"'
    return Snapshot(config, body, etag, slots, excluded, flags)


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, or ``*``)."""
    if not header:
        return False
    mine = etag.removeprefix("W/")
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == mine:
            return True
    return False


class Snapshots:
    """The current snapshot of a live config, rebuilt when the config object changes, and the
    one watcher that tells every open stream about it."""

    def __init__(self, current_config: Callable[[], SiteConfig]) -> None:
        self.current_config = current_config
        self._snapshot: Snapshot | None = None
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.listeners = 0

    def current(self) -> Snapshot:
        config = self.current_config()
        snap = self._snapshot
        if snap is None or snap.config is not config:
            snap = self._snapshot = build_snapshot(config)
        return snap

    async def next(self, seen: Snapshot, timeout: float) -> Snapshot | None:
        """A newer snapshot than ``seen``, or None after ``timeout`` seconds without one."""
        now = self.current()
        if now is not seen:
            return now
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        now = self.current()
        return None if now is seen else now

    async def _watch(self) -> None:
        last = self.current()
        while self.listeners > 0:
            await asyncio.sleep(POLL_S)
            now = self.current()
            if now is not last:
                last = now
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()


def remote_eval(
    snapshot: Snapshot,
    attrs: dict[str, Any],
    counter: Any = None,
    forced: dict[str, Any] | None = None,
    url: str = "",
) -> dict[str, Any]:
    """Every GrowthBook-expressible slot decided by trimtab's engine for ``attrs`` (counted in
    ``counter``, a Prometheus counter by interface and reason, when given), with the SDK's
    ``forcedVariations`` and ``url`` forcing variations as the SDK itself would."""
    flags = snapshot.flags
    features: dict[str, Any] = {}
    for key in flags.keys:
        r = flags.evaluate(key, attrs, require_key=False, forced=forced, url=url)
        if counter is not None:
            counter.labels("growthbook", r.reason.lower()).inc()
        feature: dict[str, Any] = {"defaultValue": r.value}
        if "experiment" in r.metadata and not r.metadata.get("forced"):
            slot = flags.config.slots[key]
            rule = next(
                x for x in flags.engine.slots[key].rules if x.rule_id == r.metadata["ruleId"]
            )
            experiment = {
                "key": r.metadata["experiment"],
                "variations": [variant_value(slot, v) for v in rule.variations],
                "hashAttribute": rule.hash_attribute,
                "meta": [{"key": v} for v in rule.variations],
            }
            result = {
                "inExperiment": True,
                "variationId": r.metadata["variation"],
                "value": r.value,
                "hashUsed": True,
                "hashAttribute": rule.hash_attribute,
                "hashValue": attrs.get(rule.hash_attribute),
                "featureId": key,
                "key": r.variant,
            }
            feature["rules"] = [
                {"force": r.value, "tracks": [{"experiment": experiment, "result": result}]}
            ]
        features[key] = feature
    return {"features": features, "trimtab": {"excluded": snapshot.excluded}}


def routes(collector: Any) -> list[Route]:
    """The GrowthBook routes over a :class:`trimtab.collector.Collector`."""
    snapshots = Snapshots(lambda: collector.runtime.config)

    def admit(request: Request) -> tuple[dict[str, str], Response | None]:
        origin = request.headers.get("origin")
        cors = collector.cors_headers(origin)
        if cors:
            cors["Access-Control-Expose-Headers"] = "ETag, x-sse-support"
            cors["Access-Control-Allow-Headers"] = "Content-Type, If-None-Match, Cache-Control"
        client = request.client.host if request.client else "unknown"
        status, reason = collector.check_public(request.path_params["client_key"], origin, client)
        if status:
            collector.metrics.rejected.labels(str(status)).inc()
            headers = dict(cors)
            if status == 429:
                headers["Retry-After"] = str(collector.limiter.retry_after())
            return cors, JSONResponse({"error": reason}, status_code=status, headers=headers)
        return cors, None

    async def features(request: Request) -> Response:
        cors, refused = admit(request)
        if refused is not None:
            return refused
        snap = snapshots.current()
        headers = {
            **cors,
            "ETag": snap.etag,
            "Cache-Control": "no-cache",
            "x-sse-support": "enabled",
        }
        if etag_matches(request.headers.get("if-none-match"), snap.etag):
            return Response(status_code=304, headers=headers)
        return Response(snap.body, media_type="application/json", headers=headers)

    async def subscribe(request: Request) -> Response:
        cors, refused = admit(request)
        if refused is not None:
            return refused

        async def stream() -> AsyncIterator[bytes]:
            snapshots.listeners += 1
            collector.metrics.sdk_streams.inc()
            try:
                snap = snapshots.current()
                yield b"event: features\ndata: " + snap.body + b"\n\n"
                while True:
                    newer = await snapshots.next(snap, KEEPALIVE_S)
                    if newer is None:
                        yield b": keep-alive\n\n"
                        continue
                    snap = newer
                    yield b"event: features\ndata: " + snap.body + b"\n\n"
            finally:
                snapshots.listeners -= 1
                collector.metrics.sdk_streams.dec()

        headers = {**cors, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def evaluate(request: Request) -> Response:
        cors, refused = admit(request)
        if refused is not None:
            return refused
        limit = collector.site.max_body_bytes
        raw = await request.body()
        if len(raw) > limit:
            collector.metrics.rejected.labels("413").inc()
            return JSONResponse(
                {"error": f"body larger than {limit} bytes"}, status_code=413, headers=cors
            )
        try:
            body = _body.decode(raw) if raw else {}
        except msgspec.DecodeError as exc:
            return JSONResponse({"error": f"body: not JSON: {exc}"}, status_code=400, headers=cors)
        if not isinstance(body, dict):
            return JSONResponse(
                {"error": "body: expected an object with attributes"}, status_code=400, headers=cors
            )
        attrs = body.get("attributes") or {}
        if not isinstance(attrs, dict):
            return JSONResponse(
                {"error": "attributes: expected an object of attribute values"},
                status_code=400,
                headers=cors,
            )
        forced = body.get("forcedVariations") or {}
        if not isinstance(forced, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in forced.values()
        ):
            return JSONResponse(
                {"error": "forcedVariations: expected an object of experiment key -> index"},
                status_code=400,
                headers=cors,
            )
        url = body.get("url") or ""
        if not isinstance(url, str) or len(url) > 4096:
            return JSONResponse(
                {"error": "url: expected a string of at most 4096 characters"},
                status_code=400,
                headers=cors,
            )
        answer = remote_eval(
            snapshots.current(),
            dict(attrs),
            collector.metrics.flag_evaluations,
            forced={str(k): v for k, v in forced.items()},
            url=url,
        )
        return Response(_json.encode(answer), media_type="application/json", headers=cors)

    async def preflight(request: Request) -> Response:
        cors = collector.cors_headers(request.headers.get("origin"))
        if not cors:
            return JSONResponse({"error": "origin not allowed"}, status_code=403)
        cors["Access-Control-Allow-Headers"] = "Content-Type, If-None-Match, Cache-Control"
        return Response(status_code=204, headers=cors)

    return [
        Route("/api/features/{client_key}", features, methods=["GET"]),
        Route("/api/features/{client_key}", preflight, methods=["OPTIONS"]),
        Route("/sub/{client_key}", subscribe, methods=["GET"]),
        Route("/api/eval/{client_key}", evaluate, methods=["POST"]),
        Route("/api/eval/{client_key}", preflight, methods=["OPTIONS"]),
    ]
