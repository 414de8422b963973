"""The collector: the ASGI app the browser talks to, built from small parts.

:class:`Collector` holds the state every route shares (the pipeline, privacy gate, limits, live
hub, metrics, the admin guard); :mod:`trimtab.httpapi` has the HTTP handlers,
:mod:`trimtab.livesocket` the WebSocket, :mod:`trimtab.wire` what pages send, and
:mod:`trimtab.admin` the one guard of every admin route. :func:`create_app` lists the routes.

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
import gzip
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from trimtab.admin import AdminGuard, same_key
from trimtab.config import LimitsSection, SiteSection
from trimtab.configapi import ConfigVersions
from trimtab.configapi import routes as config_routes
from trimtab.console.feed import LiveFeed
from trimtab.console.routes import routes as console_routes
from trimtab.decide import Decision, decision_json
from trimtab.events import AnyEvent, Consent, EventError, decode_batch
from trimtab.gbapi import routes as growthbook_routes
from trimtab.gql import routes as graphql_routes
from trimtab.httpapi import HttpApi
from trimtab.identity import VisitorIds
from trimtab.limits import RateLimiter
from trimtab.live import LiveConnection, LiveHub, Render, SlotState
from trimtab.livesocket import LiveSocket
from trimtab.minify import minify_js
from trimtab.models.admin import routes as model_routes
from trimtab.ofrep import routes as ofrep_routes
from trimtab.pipeline import Pipeline
from trimtab.privacy import PrivacyGate, scrub_label, truncate_ip
from trimtab.qa import ForceError, verify_force
from trimtab.templates import render_template
from trimtab.triggers import Watch, for_page, watched
from trimtab.tuning import tune_for_serving

# What pages send, decoded and bounded (trimtab.wire); named here too, where callers look.
from trimtab.wire import (
    JSON,
    BadMessage,
    Bound,
    Envelope,
    Hello,
    decode_message,
    error,
    query_int,
)

__all__ = [
    "BadMessage",
    "Bound",
    "Collector",
    "Envelope",
    "Hello",
    "Metrics",
    "app_from_env",
    "create_app",
    "decode_message",
    "query_int",
]

log = logging.getLogger("trimtab.collector")
TRACKER_PATHS = (
    Path(__file__).parent / "static" / "trimtab.js",
    Path(__file__).resolve().parents[2] / "tracker" / "trimtab.js",
)


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
        # every admin route passes this guard (the key is read per request: reloads apply)
        self.admin = AdminGuard(lambda: self.runtime.config.secret_key())
        self.visitor_ids = (
            VisitorIds.from_secret(secret) if secret else VisitorIds.from_data_dir(runtime.data_dir)
        )
        self.config_versions: Any = None  # set by create_app
        self.console: Any = None  # set by create_app
        # what the console shows live: every logged decision passes through the feed too
        self.feed = LiveFeed()
        logged = runtime.engine.log

        def log_and_feed(decisions: list[Decision], attrs: Mapping[str, Any]) -> None:
            if logged is not None:
                logged(decisions, attrs)
            self.feed.logged(decisions, attrs)

        runtime.engine.log = log_and_feed

    # -- checks -----------------------------------------------------------------------------
    @property
    def site(self) -> SiteSection:
        return self.runtime.config.site

    @property
    def limits(self) -> LimitsSection:
        return self.runtime.config.limits

    def _stored_consent(self, user_id: str) -> dict[str, bool] | None:
        state = self.runtime.state_of(user_id)
        return None if state is None else state.values.get("consent")

    def check_public(self, key: str | None, origin: str | None, client: str) -> tuple[int, str]:
        """(0, "") when allowed, else (HTTP status, reason)."""
        site = self.site
        if not key:
            return 401, "missing site key: pass ?key=pk_…"
        if not same_key(key, site.public_key):
            return 401, "unknown site key"
        if origin and "*" not in site.origins and origin not in site.origins:
            return 403, f"origin {origin} is not in this site's allow-list"
        if not self.limiter.allow(key, truncate_ip(client)):
            return 429, "rate limit exceeded for this key and client"
        return 0, ""

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
        message = JSON.encode(
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
    extra_routes: list[BaseRoute] | None = None,
    flush_interval_s: float | None = None,
) -> Starlette:
    """The collector as a Starlette app over a :class:`~trimtab.pipeline.Pipeline`.

    ``extra_routes`` (another API mounted on the same app, say) come after the collector's
    own; they get no guard of their own: admin ones pass through ``collector.admin``.
    """
    collector = Collector(runtime, render)
    versions = ConfigVersions(runtime)  # config as data: versions in config.sqlite
    collector.config_versions = versions
    http = HttpApi(collector)

    async def live(ws: WebSocket) -> None:
        await LiveSocket.endpoint(collector, ws)

    routes: list[BaseRoute] = [
        *http.public_routes(),
        WebSocketRoute("/v1/live", live),
        *http.service_routes(),
        *http.admin_routes(),
        *model_routes(collector),
        *config_routes(collector, versions),
        *growthbook_routes(collector),
        *ofrep_routes(collector),
        *console_routes(collector, versions),
        *graphql_routes(collector),
        *(extra_routes or []),  # the place to mount further APIs
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
        return error(400, f"request could not be decoded: {reason}", {"Connection": "close"})

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
