"""Sockets under limits: a deadline on every HTTP request and a cap on each client's sockets.

uvicorn closes an idle keep-alive connection, but a socket that connects and sends nothing, or
sends half a request head and then waits, is kept open for ever: one address under the rate
limit (which counts requests, not sockets) held 1,024 file descriptors within half a minute.
These protocol classes, given to uvicorn by ``trimtab serve`` and ``trimtab demo``
(:func:`uvicorn_options`), add what it lacks:

- **A request deadline** (``limits.http_request_timeout_s``): from the moment a connection
  opens, or a request's first byte arrives, the whole request — head and body — must arrive
  within the deadline; otherwise the client is answered ``408`` (when no answer has started)
  and the socket is closed.
- **A cap on open sockets per client address** (``limits.max_connections_per_client``),
  HTTP and WebSocket alike: a connection beyond it is answered ``503`` and closed at once,
  before anything is read (a client whose request arrives after the close sees a reset).

WebSocket sockets are bounded by the collector itself (a hello within
``limits.ws_handshake_timeout_s``, then a message at least every ``limits.ws_idle_timeout_s``)
and by uvicorn's ``ws_max_size``, which refuses a frame from its header.

The classes live at module level (uvicorn's worker processes import them by name); their
settings are class attributes that :func:`configure` sets in each process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class ClientSockets:
    """Open sockets per client address; :meth:`take` refuses one beyond ``cap`` (0: no cap).

    >>> sockets = ClientSockets(cap=2)
    >>> [sockets.take("10.0.0.1") for _ in range(3)]
    [True, True, False]
    >>> sockets.give("10.0.0.1"); sockets.take("10.0.0.1")
    True
    """

    def __init__(self, cap: int = 0) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}
        self.refused = 0

    def take(self, client: str) -> bool:
        n = self.open.get(client, 0)
        if self.cap and n >= self.cap:
            self.refused += 1
            return False
        self.open[client] = n + 1
        return True

    def give(self, client: str) -> None:
        n = self.open.get(client, 0) - 1
        if n > 0:
            self.open[client] = n
        else:
            self.open.pop(client, None)


SOCKETS = ClientSockets()


def _plain(status: bytes, message: str) -> bytes:
    body = message.encode()
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request deadline and the per-client socket cap."""

    request_timeout_s: float = 10.0
    max_head_bytes: int = 64 * 1024  # request line and headers together
    sockets: ClientSockets = SOCKETS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holder = ""  # the client address whose socket count this connection holds
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = -1  # bytes of the request head received so far; -1: not in a head

    # uvicorn narrows asyncio's BaseTransport to Transport here; we keep its signature
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else "unknown"
        if not self.sockets.take(host):
            transport.write(_plain(b"503 Service Unavailable", "too many open connections"))
            transport.close()
            return
        self._holder = host
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._holder:
            self.sockets.give(self._holder)
            self._holder = ""
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._holder:  # refused: nothing is read
            return
        if self._head_bytes < 0 and (self.cycle is None or self.cycle.response_complete):
            self._head_bytes = 0  # a new request begins with these bytes
        if self._head_bytes >= 0:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._disarm()
            self.transport.write(_plain(b"431 Request Header Fields Too Large", "head too large"))
            self.transport.close()

    # the deadline --------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            seconds = f"{self.request_timeout_s:g}"
            transport.write(_plain(b"408 Request Timeout", f"request not received in {seconds} s"))
        transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a request's first byte: all of it must follow within the deadline

    def on_headers_complete(self) -> None:
        self._head_bytes = -1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # the socket becomes the WebSocket protocol's, and so does its place in the count
        self._disarm()
        holder, self._holder = self._holder, ""
        super().handle_websocket_upgrade()
        protocol = self.transport.get_protocol()
        if isinstance(protocol, GuardedWebSocketProtocol):
            protocol.holder = holder
        elif holder:
            self.sockets.give(holder)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, releasing the client's socket count when it closes."""

    sockets: ClientSockets = SOCKETS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holder = ""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.holder:
            self.sockets.give(self.holder)
            self.holder = ""
        super().connection_lost(exc)


def configure(limits: Any) -> None:
    """Apply a config's ``limits`` section to the protocols of this process."""
    GuardedHttpProtocol.request_timeout_s = float(limits.http_request_timeout_s)
    SOCKETS.cap = int(limits.max_connections_per_client)


def uvicorn_options(limits: Any) -> dict[str, Any]:
    """The uvicorn settings that bound sockets, from a config's ``limits`` section."""
    configure(limits)
    return {
        "http": GuardedHttpProtocol,
        "ws": GuardedWebSocketProtocol,
        "ws_max_size": int(limits.ws_max_message_bytes),
        "timeout_keep_alive": int(limits.keep_alive_timeout_s),
        "timeout_graceful_shutdown": int(limits.shutdown_timeout_s),
    }
