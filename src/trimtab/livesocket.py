"""The collector's WebSocket ``/v1/live``: one :class:`LiveSocket` per open page.

The page says ``hello`` (its slots, first events, maybe a QA force token) and gets its first
decisions; then it sends ``events`` and is pushed the slots they change. Bounds: a hello
within ``limits.ws_handshake_timeout_s``, a message at least every ``limits.ws_idle_timeout_s``,
hellos rate-limited per socket and charged to the client's rate limit, messages within
``site.max_body_bytes``. A refused message gets ``{"type": "error", "reason": …}`` and the
socket stays; a socket over its bounds is closed with a code naming why (see
``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from trimtab.decide import decision_json
from trimtab.events import BatchError, EventError
from trimtab.limits import RateLimiter
from trimtab.live import LiveConnection
from trimtab.privacy import truncate_ip
from trimtab.store.sqlite import StorageError
from trimtab.wire import ENVELOPE, JSON, BadMessage, Bound, Envelope, decode_message

if TYPE_CHECKING:
    from trimtab.collector import Collector


def ack(accepted: int, errors: list[EventError]) -> bytes:
    """The acknowledgement of a batch: how many were kept and why each other one was not."""
    rejected = [{"index": e.index, "path": e.path, "reason": e.reason} for e in errors]
    return JSON.encode({"type": "ack", "accepted": accepted, "rejected": rejected})


class LiveSocket:
    """One page's socket: its hello, its events, and the bounds it is held to."""

    def __init__(self, collector: Collector, ws: WebSocket) -> None:
        self.collector = collector
        self.ws = ws
        self.conn: LiveConnection | None = None
        self.bound: Bound | None = None
        self.gpc = ws.headers.get("sec-gpc", "").strip() == "1"
        self.network = truncate_ip(ws.client.host if ws.client else "unknown")
        limits = collector.limits
        # hellos of this socket: a token bucket of its own (the client's network pays too)
        self.hellos = RateLimiter(limits.hello_rate_per_s, limits.hello_burst, max_clients=1)
        self.hello_by = time.monotonic() + limits.ws_handshake_timeout_s

    @classmethod
    async def endpoint(cls, collector: Collector, ws: WebSocket) -> None:
        """Admit the socket (site key, origin, rate), then serve it until it closes."""
        client = ws.client.host if ws.client else "unknown"
        status, reason = collector.check_public(
            ws.query_params.get("key"), ws.headers.get("origin"), client
        )
        await ws.accept()
        if status:
            await ws.send_text(JSON.encode({"type": "error", "reason": reason}).decode())
            await ws.close(code=4000 + status)
            return
        await cls(collector, ws).serve()

    async def send(self, message: bytes) -> None:
        await self.ws.send_text(message.decode())

    async def refuse(self, reason: str) -> None:
        await self.send(JSON.encode({"type": "error", "reason": reason}))

    async def close(self, code: int, reason: str) -> None:
        """Say why, then close (the reason goes in the close frame too)."""
        self.collector.metrics.rejected.labels(f"ws{code}").inc()
        with contextlib.suppress(Exception):
            await self.refuse(reason)
            await self.ws.close(code=code, reason=reason[:120])

    async def serve(self) -> None:
        """Read messages until the page leaves or a bound closes the socket."""
        collector = self.collector
        collector.metrics.live.inc()
        try:
            while await self.next_message():
                pass
        except WebSocketDisconnect:
            pass
        finally:
            collector.metrics.live.dec()
            if self.conn is not None:
                collector.hub.close(self.conn)

    async def next_message(self) -> bool:
        """Handle one message; False once the socket is closed."""
        collector, limits = self.collector, self.collector.limits
        # Before its hello a socket has until hello_by; after it, ws_idle_timeout_s between
        # messages.
        wait = self.hello_by - time.monotonic() if self.conn is None else limits.ws_idle_timeout_s
        try:
            message = await asyncio.wait_for(self.ws.receive(), max(wait, 0.0))
        except TimeoutError:
            if self.conn is None:
                await self.close(4408, f"no hello within {limits.ws_handshake_timeout_s:g} s")
            else:
                await self.close(1001, f"idle for {limits.ws_idle_timeout_s:g} s")
            return False
        if message["type"] == "websocket.disconnect":
            return False
        raw = message.get("text")
        if raw is None:
            await self.refuse("binary frames are not accepted: send JSON text")
            return True
        started = time.perf_counter()
        if len(raw) > collector.site.max_body_bytes:
            collector.metrics.rejected.labels("413").inc()
            await self.refuse(f"message larger than {collector.site.max_body_bytes} bytes")
            return True
        try:
            envelope = decode_message(ENVELOPE, raw)
        except BadMessage as exc:
            await self.refuse(f"bad message: {exc}")
            return True
        if envelope.type == "hello":
            return await self.hello(envelope)
        if envelope.type == "events":
            return await self.events(envelope, started)
        await self.refuse(f"unknown type {envelope.type!r}")
        return True

    async def hello(self, envelope: Envelope) -> bool:
        """A (new) page on this socket: its first events, then its first decisions."""
        collector, limits = self.collector, self.collector.limits
        if not self.hellos.allow("hello", "socket"):
            await self.close(
                4429, f"too many hellos: at most {limits.hello_rate_per_s:g} per second"
            )
            return False
        if not collector.limiter.allow(
            collector.site.public_key, self.network, cost=limits.hello_cost
        ):
            await self.close(4429, "rate limit exceeded for this key and client")
            return False
        problem = collector.slots_problem(envelope)
        if problem:
            await self.refuse(f"bad hello: {problem}")
            return True
        if self.conn is not None:
            collector.hub.close(self.conn)
            self.conn = None
        bound, issued = collector.identify(envelope)
        self.bound = bound
        page = collector.page_of(envelope, bound, self.send, gpc=self.gpc)
        try:
            decisions, triggers, first = await collector.open_page(
                page, bound, envelope.events, register=True, gpc=self.gpc
            )
        except BatchError as exc:  # the hello's events are not a batch
            collector.hub.close(page)
            await self.refuse(f"bad hello: events: {exc}")
            return True
        except StorageError as exc:
            collector.hub.close(page)
            # nothing decided, nothing acknowledged: closing makes the tracker queue the
            # events again and say hello anew after a pause
            await self.refuse(str(exc))
            await self.ws.close(code=1013)
            return False
        self.conn = page
        answer: dict[str, Any] = {
            "type": "decisions",
            "decisions": [decision_json(d) for d in decisions],
            **collector.force_answer(page),
        }
        if issued:
            answer["visitor_id"] = issued
        if triggers:
            answer["triggers"] = triggers
        await self.send(JSON.encode(answer))
        await self.send(ack(*(first or (0, []))))
        return True

    async def events(self, envelope: Envelope, started: float) -> bool:
        """A batch of the page's events: logged, applied, pushed, acknowledged."""
        collector = self.collector
        if self.conn is None or self.bound is None:
            await self.refuse("send hello first")
            return True
        if not collector.limiter.allow(collector.site.public_key, self.network):
            await self.close(4429, "rate limit exceeded")
            return False
        try:
            accepted, errors, changed = await collector.accept_events(
                bytes(envelope.events), bound=self.bound, gpc=self.gpc
            )
        except (BatchError, StorageError) as exc:
            # not acknowledged: the tracker keeps the batch and sends it again
            await self.refuse(str(exc))
            return True
        await collector.push(changed, started)
        collector.metrics.ingest_seconds.observe(time.perf_counter() - started)
        await self.send(ack(accepted, errors))
        return True
