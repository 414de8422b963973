"""The collector: the ASGI app the browser talks to.

Routes (see ``docs/protocol.md``): ``POST /v1/events``, ``WS /v1/live``, ``POST /v1/decide``,
``GET /t.js``, ``GET /health``, ``GET /metrics``, and admin routes behind the secret key
(``POST /v1/admin/reload``, ``DELETE /v1/users/{id}``, ``GET /v1/admin/decisions``).
GrowthBook SDK routes (``/api/features/{key}``, ``/sub/{key}``, ``/api/eval/{key}``) come from
:mod:`trimtab.gbapi`, OpenFeature's OFREP routes (``/ofrep/v1/…``) from :mod:`trimtab.ofrep`.

Every request passes the same checks in the same order: site key, origin allow-list, size
limit, rate limit; each failure is a clear 4xx (or WebSocket close code) naming the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hmac
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from trimtab.configapi import ConfigVersions
from trimtab.configapi import routes as config_routes
from trimtab.console.feed import LiveFeed
from trimtab.console.routes import routes as console_routes
from trimtab.decide import Decision, decision_json
from trimtab.events import AnyEvent, BatchError, Consent, EventError, decode_batch
from trimtab.gbapi import routes as growthbook_routes
from trimtab.gql import routes as graphql_routes
from trimtab.identity import VisitorIds
from trimtab.limits import RateLimiter
from trimtab.live import LiveConnection, LiveHub, Render, SlotState
from trimtab.minify import minify_js
from trimtab.models.admin import routes as model_routes
from trimtab.ofrep import routes as ofrep_routes
from trimtab.pipeline import Pipeline
from trimtab.privacy import PrivacyGate, scrub_label, truncate_ip
from trimtab.qa import ForceError, verify_force
from trimtab.store.sqlite import StorageError
from trimtab.templates import render_template
from trimtab.triggers import Watch, for_page, watched
from trimtab.tuning import tune_for_serving

log = logging.getLogger("trimtab.collector")
TRACKER_PATHS = (
    Path(__file__).parent / "static" / "trimtab.js",
    Path(__file__).resolve().parents[2] / "tracker" / "trimtab.js",
)


def _no_events() -> msgspec.Raw:
    return msgspec.Raw(b"null")


# Bounds of what a page says about itself (the number of slots is bounded by the config too:
# limits.max_slots_per_hello).
_IdText = Annotated[str, msgspec.Meta(max_length=128)]
_SlotNames = Annotated[list[_IdText], msgspec.Meta(max_length=1024)]
_PageText = Annotated[str, msgspec.Meta(max_length=2048)]
_PageViewId = Annotated[str, msgspec.Meta(max_length=64)]


class Hello(msgspec.Struct, kw_only=True):
    """A page saying which slots it has (``POST /v1/decide``, the WebSocket ``hello``).

    ``events`` are the page's first events (its consent, context and page view): they are
    logged and applied before anything is decided, so the first decisions already know them.
    """

    user_id: _IdText
    session_id: _IdText
    slots: _SlotNames = []
    page: _PageText = ""
    page_category: _IdText = ""
    page_view_id: _PageViewId = ""
    events: msgspec.Raw = msgspec.field(default_factory=_no_events)
    force: Annotated[str, msgspec.Meta(max_length=1024)] = ""  # a signed QA force token
    # (trimtab.qa), from ?tt_force=


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    """Who a page (a live socket or a decide request) acts as.

    ``user`` is its user id (a signed visitor id when they are required); ``claimed`` the id
    the page said (its placeholder before it had a visitor id): its events may carry either and
    are stored under ``user``. ``session`` is the page's session.
    """

    user: str
    claimed: str
    session: str


class Envelope(msgspec.Struct, kw_only=True):
    type: Annotated[str, msgspec.Meta(max_length=32)]
    events: msgspec.Raw = msgspec.field(default_factory=_no_events)
    user_id: _IdText = ""
    session_id: _IdText = ""
    slots: _SlotNames = []
    page: _PageText = ""
    page_category: _IdText = ""
    page_view_id: _PageViewId = ""
    force: Annotated[str, msgspec.Meta(max_length=1024)] = ""


_envelope = msgspec.json.Decoder(Envelope)
_decide_request = msgspec.json.Decoder(Hello)  # a decide request says what a hello says
_json = msgspec.json.Encoder()


class BadMessage(ValueError):
    """A request or WebSocket message that cannot be decoded; the reason names the problem."""


def decode_message(decoder: msgspec.json.Decoder, data: bytes | str) -> Any:
    """Decode untrusted JSON with ``decoder``; any failure is a :class:`BadMessage`.

    Covers what msgspec leaves to the caller: invalid UTF-8 and nesting too deep to decode.
    """
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadMessage(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise BadMessage(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise BadMessage("nested too deeply") from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; :class:`BadMessage` naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadMessage(f"query parameter {name!r} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadMessage(f"query parameter {name!r} must be between {low} and {high}")
    return value


def _same(supplied: str, expected: str) -> bool:
    """Constant-time comparison of two keys, any characters (compare_digest on str refuses
    non-ASCII, which turned a stray character in a key into a 500)."""
    return hmac.compare_digest(supplied.encode("utf-8", "replace"), expected.encode())


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


class Metrics:
    """Prometheus metrics, in a registry of the app's own (several apps may share a process).

    Conventions (docs/ecosystem.md, "Metrics"; tested): names in base units (``_seconds``,
    ``_bytes``), counters end in ``_total``, and no label holds anything per user, session or
    request: every label has a small fixed set of values.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("trimtab_events_total", "Events by outcome", ["outcome"], registry=r)
        self.decisions = Counter(
            "trimtab_decisions_total", "Slot decisions", ["source"], registry=r
        )
        self.pushes = Counter("trimtab_pushes_total", "Decisions pushed over WebSocket", registry=r)
        self.live = Gauge("trimtab_live_connections", "Open live connections", registry=r)
        self.ingest_seconds = Histogram(
            "trimtab_ingest_seconds",
            "Event batch arrival to adjustment sent",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        # the HTTP status (or WebSocket close reason) a refused request got
        self.rejected = Counter(
            "trimtab_requests_rejected_total", "Requests refused", ["code"], registry=r
        )
        self.flag_evaluations = Counter(
            "trimtab_flag_evaluations_total",
            "Flags evaluated for OFREP and GrowthBook remote evaluation, by OpenFeature reason",
            ["interface", "reason"],
            registry=r,
        )
        self.sdk_streams = Gauge(
            "trimtab_sdk_streams", "Open GrowthBook SDK streams (server-sent events)", registry=r
        )


class Collector:
    """The collector's state: runtime, privacy gate, limits, live hub and metrics."""

    def __init__(self, runtime: Pipeline, render: Render | None = None, salt: bytes | None = None):
        self.runtime = runtime
        site = runtime.config.site
        secret = runtime.config.secret_key()
        self.gate = PrivacyGate(
            salt=salt or (secret or site.public_key).encode(),
            consent=site.consent,
            stored_consent=self._stored_consent,
            keep_query_params=site.keep_query_params,
        )
        self.limiter = RateLimiter(site.rate_limit_per_s, site.rate_burst)
        # the render hook fills each decision's payload for the page (default: variant
        # templates, trimtab.templates)
        self.hub = LiveHub(
            lambda: self.runtime.engine,
            render or render_template,
            self.gate.personalization_allowed,
        )
        self._watch: tuple[Any, Watch] | None = None
        self.metrics = Metrics()
        self.started = time.time()
        self.degraded = ""
        self.push_latency_s: deque[float] = deque(maxlen=200_000)
        self._tracker: tuple[bytes, bytes] | None = None
        self.visitor_ids = (
            VisitorIds.from_secret(secret) if secret else VisitorIds.from_data_dir(runtime.data_dir)
        )
        self.config_versions: Any = None  # set by create_app
        self.console: Any = None  # set by create_app
        # what the console shows live: every logged decision passes through the feed too
        self.feed = LiveFeed()
        logged = runtime.engine.log

        def log_and_feed(decisions: list[Decision], attrs: dict[str, Any]) -> None:
            if logged is not None:
                logged(decisions, attrs)
            self.feed.logged(decisions, attrs)

        runtime.engine.log = log_and_feed

    # -- checks -----------------------------------------------------------------------------
    @property
    def site(self):
        return self.runtime.config.site

    @property
    def limits(self):
        return self.runtime.config.limits

    def _stored_consent(self, user_id: str) -> dict[str, bool] | None:
        state = self.runtime.state_of(user_id)
        return None if state is None else state.values.get("consent")

    def check_public(self, key: str | None, origin: str | None, client: str) -> tuple[int, str]:
        """(0, "") when allowed, else (HTTP status, reason)."""
        site = self.site
        if not key:
            return 401, "missing site key: pass ?key=pk_…"
        if not _same(key, site.public_key):
            return 401, "unknown site key"
        if origin and "*" not in site.origins and origin not in site.origins:
            return 403, f"origin {origin} is not in this site's allow-list"
        if not self.limiter.allow(key, truncate_ip(client)):
            return 429, "rate limit exceeded for this key and client"
        return 0, ""

    def check_admin(self, request: Request) -> JSONResponse | None:
        secret = self.runtime.config.secret_key()
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secret:
            return _error(403, "admin API disabled: no secret key configured")
        if not supplied or not _same(supplied, secret):
            return _error(401, "admin routes need Authorization: Bearer <secret key>")
        return None

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        if "*" not in self.site.origins and origin not in self.site.origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    # -- identity ---------------------------------------------------------------------------
    @property
    def require_signed(self) -> bool:
        return self.runtime.config.identity.require_signed

    def identify(self, hello: Hello | Envelope) -> tuple[Bound, str]:
        """Who a hello (or decide request) acts as, and the visitor id to hand the page ("" when
        it keeps the one it has).

        With signed ids required, a page without a valid visitor id gets a new one: whatever
        it claimed (another visitor's id, a forged signature) it acts as a new visitor. The
        tracker's own first-contact placeholder gets the same new id each time it asks
        (``VisitorIds.first_contact``), so a hello repeated after a lost answer stores nothing
        twice.
        Without, an empty id still gets one (never a profile shared by every id-less page).
        """
        claimed = hello.user_id
        if claimed and (not self.require_signed or self.visitor_ids.problem(claimed) is None):
            return Bound(claimed, claimed, hello.session_id), ""
        issued = self.visitor_ids.first_contact(claimed, hello.session_id)
        return Bound(issued, claimed, hello.session_id), issued

    # -- the loop ---------------------------------------------------------------------------
    def slots_problem(self, hello: Hello | Envelope) -> str:
        """Why a hello's slot list is refused ("" when it is fine)."""
        most = self.limits.max_slots_per_hello
        if len(hello.slots) > most:
            return (
                f"too many slots: {len(hello.slots)} named, at most {most} allowed "
                "(limits.max_slots_per_hello) - at `$.slots`"
            )
        return ""

    def page_of(
        self,
        hello: Hello | Envelope,
        bound: Bound,
        send: Callable[[bytes], Awaitable[None]] | None = None,
        gpc: bool = False,
    ) -> LiveConnection:
        """The open page a hello (or decide request) describes, under the stored user id.

        Only the config's slots are kept, each once: a name the site does not declare is never
        decided, so it writes no decision row. ``gpc``: the request carried ``Sec-GPC: 1``.
        """
        if gpc:
            self.gate.note_gpc(bound.user)
        user = self.gate.user_id(bound.user)
        known = self.runtime.engine.slots
        slots = [name for name in dict.fromkeys(hello.slots) if name in known]
        conn = LiveConnection(
            user_id=user,
            session_id=hello.session_id,
            slots=slots,
            page=self.gate.scrub_page(hello.page),
            page_category=scrub_label(hello.page_category),
            page_view_id=hello.page_view_id[:64],
            personalize=self.gate.personalization_allowed(user),
            send=send,
        )
        if hello.force:
            try:
                conn.forced = verify_force(self.runtime.config.secret_key(), hello.force)
            except ForceError as exc:
                conn.force_refused = str(exc)
        return conn

    @staticmethod
    def force_answer(conn: LiveConnection) -> dict[str, Any]:
        """What a hello or decide answer says about its QA force token, if it had one."""
        if conn.force_refused:
            return {"force": {"refused": conn.force_refused}}
        if conn.forced:
            return {"force": {"slots": conn.forced}}
        return {}

    async def prepare(self, user_ids: set[str]) -> bool:
        """Fresh state for these users within the decide deadline; False when unavailable."""
        try:
            await asyncio.wait_for(
                self.runtime.prepare(user_ids), self.site.decide_deadline_ms / 1000.0
            )
        except Exception as exc:  # an unreachable or slow state store must not fail the page
            self.degraded = f"state store: {type(exc).__name__}: {exc}"[:300]
            return False
        self.degraded = ""
        return True

    async def first_decisions(self, conn: LiveConnection) -> list[Decision]:
        """Every slot of a page, decided now (what the page renders first).

        When the user's state cannot be had within the deadline, every slot gets its default,
        flagged ``degraded`` (logged, and replaced by the first real decision later), instead
        of the request failing.
        """
        if not await self.prepare({conn.user_id}):
            decisions = self.runtime.engine.defaults(
                conn.slots, user=conn.user_id, session=conn.session_id
            )
            for d in decisions:
                conn.shown[d.slot] = SlotState(d, 0)
                self.metrics.decisions.labels(d.source).inc()
            return decisions
        # consent given in an earlier visit is in the state just loaded (another process may
        # have recorded it): decide personalization only now
        conn.personalize = self.gate.personalization_allowed(conn.user_id)
        decisions = self.hub.first(conn)
        for d in decisions:
            self.metrics.decisions.labels(d.source).inc()
        return decisions

    async def open_page(
        self,
        conn: LiveConnection,
        bound: Bound,
        events: msgspec.Raw,
        register: bool = False,
        gpc: bool = False,
    ) -> tuple[list[Decision], dict[str, Any], tuple[int, list[EventError]] | None]:
        """A page's hello (or decide request): its first events, then its first decisions.

        The events (consent, context, page view) are logged and applied first — other open
        pages of the session get what they change — so the decisions are made after the
        consent they carry and know the page view. With ``register`` the page then gets pushes
        (a WebSocket hello; a decide request does not). Returns the decisions, the triggers
        (:mod:`trimtab.triggers`) and, when events came along, (accepted, rejected).
        """
        ack = None
        if bytes(events) not in (b"null", b"[]"):
            started = time.perf_counter()
            accepted, errors, changed = await self.accept_events(
                bytes(events), bound=bound, gpc=gpc
            )
            await self.push(changed, started)
            ack = (accepted, errors)
        self.hub.recall(conn)
        if register:
            self.hub.open(conn)
        decided = time.perf_counter()
        decisions = await self.first_decisions(conn)
        self.feed.decided(time.perf_counter() - decided)
        triggers: dict[str, Any] = {}
        if conn.personalize and conn.slots:
            attrs = self.runtime.features_of(conn.user_id, conn.session_id, conn.page_view_id)
            triggers = for_page(self.watch(), attrs)
        return decisions, triggers, ack

    def watch(self) -> Watch:
        """What the current config's rules watch, compiled once per config."""
        config = self.runtime.config
        if self._watch is None or self._watch[0] is not config:
            self._watch = (config, watched(config))
        return self._watch[1]

    async def release_held(self, interval_s: float = 0.05) -> None:
        """Send the changes held back by ``min_ms_between_changes`` once their wait ends."""
        while True:
            await asyncio.sleep(interval_s)
            for conn in self.hub.due():
                moved = self.hub.update(conn)
                if moved:
                    await self.send(conn, moved)

    async def send(self, conn: LiveConnection, decisions: list[Decision]) -> int:
        """Push decisions to one open page; the number sent."""
        if conn.send is None or not decisions:
            return 0
        message = _json.encode(
            {"type": "decisions", "decisions": [decision_json(d) for d in decisions]}
        )
        try:
            await conn.send(message)
        except Exception:  # the page went away; its connection closes on its own
            return 0
        self.metrics.pushes.inc(len(decisions))
        return len(decisions)

    async def accept_events(
        self, body: bytes, bound: Bound | None = None, gpc: bool = False
    ) -> tuple[int, list[EventError], set[tuple[str, str]]]:
        """Decode, gate, log and apply a batch; returns (accepted, rejected, changed sessions).

        ``bound`` is who a live socket or decide request acts as: its events must be theirs.
        Without it (``POST /v1/events``), each event's ``user_id`` must be a signed visitor id
        when those are required. An event dated outside the clock-skew window
        (``limits.clock_skew_*``) is rejected. ``gpc``: the request carried ``Sec-GPC: 1`` (no
        consent implied for its users).
        """
        limits = self.limits
        result = decode_batch(
            body,
            max_past_ms=limits.clock_skew_past_s * 1000.0,
            max_ahead_ms=limits.clock_skew_future_s * 1000.0,
        )
        errors = list(result.errors)
        own: list[AnyEvent] = []
        for index, event in enumerate(result.events):
            if bound is not None:
                if event.user_id not in (bound.user, bound.claimed) or (
                    event.session_id != bound.session
                ):
                    errors.append(
                        EventError(index, f"$[{index}].user_id", "does not match this connection")
                    )
                    continue
                event.user_id = bound.user
            elif self.require_signed:
                problem = self.visitor_ids.problem(event.user_id)
                if problem is not None:
                    errors.append(EventError(index, f"$[{index}].user_id", problem))
                    continue
            if gpc:  # under the id the event is stored as (after binding)
                self.gate.note_gpc(event.user_id)
            own.append(event)
        errors.sort(key=lambda e: e.index)
        kept: list[AnyEvent] = []
        # Consent given in an earlier visit lives in the user's state: have it at hand.
        await self.prepare({self.gate.user_id(e.user_id) for e in own})
        # A consent choice applies to the whole batch that carries it, whatever its position.
        for event in own:
            if type(event) is Consent:
                self.gate.record_consent(event.user_id, event.purposes)
        for event in own:
            gated = self.gate.gate(event)
            if gated is not None:
                kept.append(gated)
        changed = await self.runtime.accept(kept)
        self.feed.accepted(kept)
        m = self.metrics
        m.events.labels("accepted").inc(len(kept))
        if errors:
            m.events.labels("rejected").inc(len(errors))
        dropped = len(own) - len(kept)
        if dropped:
            m.events.labels("no_consent").inc(dropped)
        return len(kept), errors, changed

    async def push(self, changed: set[tuple[str, str]], arrived: float | None = None) -> int:
        """Send each open page of the changed sessions the slots that should change.

        ``arrived`` (a perf_counter reading taken when the events arrived) lets the loop's
        latency, arrival to adjustment leaving, be recorded per push.
        """
        sent = 0
        for conn, decisions in self.hub.refresh(changed):
            n = await self.send(conn, decisions)
            if n and arrived is not None:
                self.push_latency_s.append(time.perf_counter() - arrived)
            sent += n
        return sent

    def tracker(self) -> tuple[bytes, bytes]:
        """The tracker as served (minified: :mod:`trimtab.minify`), plain and gzipped."""
        if self._tracker is None:
            for path in TRACKER_PATHS:
                if path.is_file():
                    raw = minify_js(path.read_text(encoding="utf-8")).encode()
                    self._tracker = (raw, gzip.compress(raw, 9))
                    break
            else:
                raise FileNotFoundError("tracker script trimtab.js not found")
        return self._tracker


def create_app(
    runtime: Pipeline,
    render: Render | None = None,
    extra_routes: list[Any] | None = None,
    flush_interval_s: float | None = None,
) -> Starlette:
    """The collector as a Starlette app over a :class:`~trimtab.pipeline.Pipeline`."""
    collector = Collector(runtime, render)
    versions = ConfigVersions(runtime)  # config as data: versions in config.sqlite
    collector.config_versions = versions

    async def admit(request: Request) -> tuple[dict[str, str], Response | None, bytes]:
        """Key, origin, rate and size checks of a public route; the body when admitted."""
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
            return cors, _error(status, reason, headers), b""
        limit = collector.site.max_body_bytes
        closing = {**cors, "Connection": "close"}  # the rest of the body is not read
        too_large = f"body larger than {limit} bytes (site.max_body_bytes)"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            collector.metrics.rejected.labels("413").inc()
            return cors, _error(413, too_large, closing), b""
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
                        return cors, _error(413, too_large, closing), b""
                    chunks.append(chunk)
        except TimeoutError:
            collector.metrics.rejected.labels("408").inc()
            return cors, _error(408, f"body not received within {seconds:g} s", closing), b""
        except ClientDisconnect:
            return cors, _error(400, "client went away before the body arrived", closing), b""
        return cors, None, b"".join(chunks)

    def gpc(request: Request | WebSocket) -> bool:
        """Whether the browser sent Global Privacy Control (honoured under implied consent)."""
        return request.headers.get("sec-gpc", "").strip() == "1"

    async def events(request: Request) -> Response:
        cors, refused, body = await admit(request)
        if refused is not None:
            return refused
        started = time.perf_counter()
        try:
            accepted, errors, changed = await collector.accept_events(body, gpc=gpc(request))
        except BatchError as exc:
            return _error(400, str(exc), cors)
        except StorageError as exc:  # nothing acknowledged: the tracker keeps the batch
            collector.metrics.rejected.labels("503").inc()
            retry = {**cors, "Retry-After": str(exc.retry_after_s)}
            return _error(503, f"events not stored, try again: {exc}", retry)
        await collector.push(changed, started)
        collector.metrics.ingest_seconds.observe(time.perf_counter() - started)
        rejected = [{"index": e.index, "path": e.path, "reason": e.reason} for e in errors]
        return JSONResponse({"accepted": accepted, "rejected": rejected}, headers=cors)

    async def decide(request: Request) -> Response:
        cors, refused, raw = await admit(request)
        if refused is not None:
            return refused
        try:
            body = decode_message(_decide_request, raw)
        except BadMessage as exc:
            return _error(400, f"bad decide request: {exc}", cors)
        problem = collector.slots_problem(body)
        if problem:
            return _error(400, f"bad decide request: {problem}", cors)
        sent_gpc = gpc(request)
        bound, issued = collector.identify(body)
        page = collector.page_of(body, bound, gpc=sent_gpc)
        try:
            decisions, triggers, ack = await collector.open_page(
                page, bound, body.events, gpc=sent_gpc
            )
        except BatchError as exc:
            return _error(400, f"bad decide request: events: {exc}", cors)
        except StorageError as exc:  # nothing acknowledged: the page may send them again
            collector.metrics.rejected.labels("503").inc()
            retry = {**cors, "Retry-After": str(getattr(exc, "retry_after_s", 5))}
            return _error(503, f"events not stored, try again: {exc}", retry)
        answer: dict[str, Any] = {"decisions": [decision_json(d) for d in decisions]}
        answer.update(collector.force_answer(page))
        if issued:
            answer["visitor_id"] = issued
        if triggers:
            answer["triggers"] = triggers
        if ack is not None:
            answer["accepted"] = ack[0]
            answer["rejected"] = [
                {"index": e.index, "path": e.path, "reason": e.reason} for e in ack[1]
            ]
        return JSONResponse(answer, headers=cors)

    async def preflight(request: Request) -> Response:
        cors = collector.cors_headers(request.headers.get("origin"))
        if not cors:
            return _error(403, "origin not allowed")
        return Response(status_code=204, headers=cors)

    async def live(ws: WebSocket) -> None:
        client = ws.client.host if ws.client else "unknown"
        status, reason = collector.check_public(
            ws.query_params.get("key"), ws.headers.get("origin"), client
        )
        await ws.accept()
        if status:
            await ws.send_text(_json.encode({"type": "error", "reason": reason}).decode())
            await ws.close(code=4000 + status)
            return
        conn: LiveConnection | None = None
        bound: Bound | None = None
        sent_gpc = gpc(ws)
        limits = collector.limits
        network = truncate_ip(client)
        # hellos of this socket: a token bucket of its own (the client's network pays too)
        hellos = RateLimiter(limits.hello_rate_per_s, limits.hello_burst, max_clients=1)
        hello_by = time.monotonic() + limits.ws_handshake_timeout_s

        async def send(message: bytes) -> None:
            await ws.send_text(message.decode())

        async def refuse(reason: str) -> None:
            await send(_json.encode({"type": "error", "reason": reason}))

        async def close(code: int, reason: str) -> None:
            """Say why, then close (the reason goes in the close frame too)."""
            collector.metrics.rejected.labels(f"ws{code}").inc()
            with contextlib.suppress(Exception):
                await refuse(reason)
                await ws.close(code=code, reason=reason[:120])

        def ack(accepted: int, errors: list[EventError]) -> bytes:
            rejected = [{"index": e.index, "path": e.path, "reason": e.reason} for e in errors]
            return _json.encode({"type": "ack", "accepted": accepted, "rejected": rejected})

        collector.metrics.live.inc()
        try:
            while True:
                # Before its hello a socket has until hello_by; after it, ws_idle_timeout_s
                # between messages.
                wait = hello_by - time.monotonic() if conn is None else limits.ws_idle_timeout_s
                try:
                    message = await asyncio.wait_for(ws.receive(), max(wait, 0.0))
                except TimeoutError:
                    if conn is None:
                        seconds = f"{limits.ws_handshake_timeout_s:g}"
                        await close(4408, f"no hello within {seconds} s")
                    else:
                        await close(1001, f"idle for {limits.ws_idle_timeout_s:g} s")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    await refuse("binary frames are not accepted: send JSON text")
                    continue
                started = time.perf_counter()
                if len(raw) > collector.site.max_body_bytes:
                    collector.metrics.rejected.labels("413").inc()
                    limit = collector.site.max_body_bytes
                    await refuse(f"message larger than {limit} bytes")
                    continue
                try:
                    envelope = decode_message(_envelope, raw)
                except BadMessage as exc:
                    await refuse(f"bad message: {exc}")
                    continue
                if envelope.type == "hello":
                    if not hellos.allow("hello", "socket"):
                        rate = f"{limits.hello_rate_per_s:g}"
                        await close(4429, f"too many hellos: at most {rate} per second")
                        return
                    if not collector.limiter.allow(
                        collector.site.public_key, network, cost=limits.hello_cost
                    ):
                        await close(4429, "rate limit exceeded for this key and client")
                        return
                    problem = collector.slots_problem(envelope)
                    if problem:
                        await refuse(f"bad hello: {problem}")
                        continue
                    if conn is not None:
                        collector.hub.close(conn)
                        conn = None
                    bound, issued = collector.identify(envelope)
                    page = collector.page_of(envelope, bound, send, gpc=sent_gpc)
                    try:
                        decisions, triggers, first = await collector.open_page(
                            page, bound, envelope.events, register=True, gpc=sent_gpc
                        )
                    except BatchError as exc:  # the hello's events are not a batch
                        collector.hub.close(page)
                        await refuse(f"bad hello: events: {exc}")
                        continue
                    except StorageError as exc:
                        collector.hub.close(page)
                        # nothing decided, nothing acknowledged: closing makes the tracker
                        # queue the events again and say hello anew after a pause
                        await refuse(str(exc))
                        await ws.close(code=1013)
                        return
                    conn = page
                    answer: dict[str, Any] = {
                        "type": "decisions",
                        "decisions": [decision_json(d) for d in decisions],
                        **collector.force_answer(page),
                    }
                    if issued:
                        answer["visitor_id"] = issued
                    if triggers:
                        answer["triggers"] = triggers
                    await send(_json.encode(answer))
                    await send(ack(*(first or (0, []))))
                elif envelope.type == "events":
                    if conn is None or bound is None:
                        await refuse("send hello first")
                        continue
                    if not collector.limiter.allow(collector.site.public_key, network):
                        await close(4429, "rate limit exceeded")
                        return
                    try:
                        accepted, errors, changed = await collector.accept_events(
                            bytes(envelope.events), bound=bound, gpc=sent_gpc
                        )
                    except (BatchError, StorageError) as exc:
                        # not acknowledged: the tracker keeps the batch and sends it again
                        await refuse(str(exc))
                        continue
                    await collector.push(changed, started)
                    collector.metrics.ingest_seconds.observe(time.perf_counter() - started)
                    await send(ack(accepted, errors))
                else:
                    await refuse(f"unknown type {envelope.type!r}")
        except WebSocketDisconnect:
            pass
        finally:
            collector.metrics.live.dec()
            if conn is not None:
                collector.hub.close(conn)

    async def tracker(request: Request) -> Response:
        raw, packed = collector.tracker()
        headers = {"Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)

    async def health(request: Request) -> Response:
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

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(collector.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reload(request: Request) -> Response:
        denied = collector.check_admin(request)
        if denied is not None:
            return denied
        from trimtab.config import ConfigError

        try:
            config = collector.runtime.reload()
        except ConfigError as exc:
            return _error(422, str(exc))
        return JSONResponse({"reloaded": config.source, "slots": list(config.slots)})

    async def erase(request: Request) -> Response:
        denied = collector.check_admin(request)
        if denied is not None:
            return denied
        raw = request.path_params["user_id"]
        user = collector.gate.user_id(raw)
        try:
            counts = await collector.runtime.erase_async(user)
        except StorageError as exc:
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        collector.gate.consents.pop(user, None)
        collector.feed.forget(user)
        return JSONResponse({"erased": user, **counts})

    async def recent_decisions(request: Request) -> Response:
        denied = collector.check_admin(request)
        if denied is not None:
            return denied
        collector.runtime.decision_log.flush_sync()
        raw = request.query_params.get("user_id")
        user = collector.gate.user_id(raw) if raw else None
        try:
            limit = query_int(request, "limit", 100, 1, 100_000)
        except BadMessage as exc:
            return _error(400, str(exc))
        records = collector.runtime.decision_log.read(user, limit)
        return Response(_json.encode(records), media_type="application/json")

    async def features(request: Request) -> Response:
        """What trimtab knows about a user now: the attributes rules would see."""
        denied = collector.check_admin(request)
        if denied is not None:
            return denied
        raw = request.query_params.get("user_id")
        if not raw:
            return _error(400, "pass ?user_id=… (and optionally &session_id=…)")
        user = collector.gate.user_id(raw)
        if not await collector.prepare({user}):
            return _error(503, f"state unavailable: {collector.degraded}")
        session = request.query_params.get("session_id", "")
        return Response(
            _json.encode(collector.runtime.features_of(user, session)),
            media_type="application/json",
        )

    async def latency(request: Request) -> Response:
        denied = collector.check_admin(request)
        if denied is not None:
            return denied
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

    openapi_doc: list[bytes] = []

    async def openapi(request: Request) -> Response:
        """The OpenAPI 3.1 document of every HTTP route (trimtab.openapi)."""
        if not openapi_doc:
            from trimtab import __version__
            from trimtab.openapi import document

            built = document(routes, collector.site.public_key, __version__)
            openapi_doc.append(_json.encode(built))
        return Response(openapi_doc[0], media_type="application/json")

    routes: list[Any] = [
        Route("/openapi.json", openapi),
        Route("/v1/events", events, methods=["POST"]),
        Route("/v1/events", preflight, methods=["OPTIONS"]),
        Route("/v1/decide", decide, methods=["POST"]),
        Route("/v1/decide", preflight, methods=["OPTIONS"]),
        WebSocketRoute("/v1/live", live),
        Route("/t.js", tracker),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/v1/admin/reload", reload, methods=["POST"]),
        Route("/v1/admin/decisions", recent_decisions),
        Route("/v1/admin/latency", latency),
        Route("/v1/admin/features", features),
        Route("/v1/users/{user_id:path}", erase, methods=["DELETE"]),  # any id, "/" too
        *model_routes(collector),
        *config_routes(collector, versions),
        *growthbook_routes(collector),
        *ofrep_routes(collector),
        *console_routes(collector, versions),
        *graphql_routes(collector),
        *(extra_routes or []),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await runtime.start(flush_interval_s or runtime.config.storage.flush_ms / 1000.0)
        tune_for_serving()
        releaser = asyncio.create_task(collector.release_held())
        syncer = asyncio.create_task(versions.sync_forever())
        try:
            yield
        finally:
            for task in (releaser, syncer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.stop()
            versions.close()

    async def undecodable(request: Request, exc: Exception) -> Response:
        """The last net under every route: input no handler could decode is a 400, never a
        500 (handlers catch what they expect; this catches what slipped past them)."""
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
        collector.metrics.rejected.labels("400").inc()
        return _error(400, f"request could not be decoded: {reason}", {"Connection": "close"})

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RecursionError: undecodable, UnicodeDecodeError: undecodable},
    )
    app.state.collector = collector
    return app


def app_from_env() -> Starlette:
    """The app for ``trimtab serve --workers N``: each worker builds its own from the env.

    ``TRIMTAB_CONFIG`` names the site config and ``TRIMTAB_DATA_DIR`` the data directory;
    ``TRIMTAB_STATE`` / ``TRIMTAB_BUS`` select the shared backends.
    """
    import os

    from trimtab.config import load_config
    from trimtab.connections import configure
    from trimtab.pipeline import open_pipeline

    config = load_config(os.environ["TRIMTAB_CONFIG"])
    configure(config.limits)  # this worker's sockets get the config's limits
    return create_app(open_pipeline(config, os.environ.get("TRIMTAB_DATA_DIR") or None))
