"""Choosing the event bus and the state store from a URL, and publishing through outages.

=======================================  ===============================================
URL                                      backend
=======================================  ===============================================
``None``, ``""`` or ``sqlite:``          the embedded SQLite file in ``data_dir``
``sqlite:/abs/path.sqlite``              SQLite at that path
``memory:``                              SQLite in memory (tests, throwaway runs)
``redis://host:6379/0?prefix=tt``        :class:`~trimtab.store.redis.RedisStateStore` or
                                         :class:`~trimtab.bus.redis.RedisStreamBus`
``nats://host:4222?stream=TT_EVENTS``    :class:`~trimtab.bus.nats.NatsJetStreamBus`
=======================================  ===============================================

The environment variables ``TRIMTAB_STATE`` and ``TRIMTAB_BUS`` override the URL passed in,
so a deployment switches backends without editing the config. Query parameters set backend
options (``prefix``, ``partitions``, ``stream``, ``ack_wait_s``, ``claim_idle_ms`` …); the
rest of a Redis URL goes to redis-py unchanged.

>>> store = open_state_store("memory:", ".")
>>> type(store).__name__
'SqliteStateStore'
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trimtab.bus import EventBus, SqliteEventLog
from trimtab.events import AnyEvent
from trimtab.store import SqliteStateStore, StateStore

log = logging.getLogger("trimtab.backends")

# Backend options a URL may carry, with their types; anything else stays in the URL.
_REDIS_BUS_OPTIONS = {
    "prefix": str,
    "partitions": int,
    "dedupe_ttl_s": int,
    "claim_idle_ms": int,
    "block_ms": int,
    "maxlen": int,
}
_REDIS_STORE_OPTIONS = {"prefix": str}
_NATS_OPTIONS = {
    "stream": str,
    "prefix": str,
    "partitions": int,
    "duplicate_window_s": float,
    "ack_wait_s": float,
    "max_ack_pending": int,
    "fetch_timeout_s": float,
    "publish_timeout_s": float,
}


def _split_options(url: str, known: dict[str, type]) -> tuple[str, dict[str, Any]]:
    """Take our options out of the URL's query; return the remaining URL and the options."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    rest = []
    for key, value in parse_qsl(parts.query):
        if key in known:
            options[key] = known[key](value)
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), options


def _sqlite_path(url: str, data_dir: str | Path, default_name: str) -> str | Path:
    if url.startswith("memory:"):
        return ":memory:"
    path = url.removeprefix("sqlite:").removeprefix("//")
    return path or Path(data_dir) / default_name


def open_state_store(url: str | None, data_dir: str | Path) -> StateStore:
    """The state store a URL names (``TRIMTAB_STATE`` wins over ``url``)."""
    url = os.environ.get("TRIMTAB_STATE") or url or ""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from trimtab.store.redis import RedisStateStore

        rest, options = _split_options(url, _REDIS_STORE_OPTIONS)
        return RedisStateStore.from_url(rest, **options)
    if url == "" or url.startswith(("sqlite:", "memory:")):
        return SqliteStateStore(_sqlite_path(url, data_dir, "state.sqlite"))
    raise ValueError(f"unknown state store URL {url!r} (use sqlite:, memory: or redis://)")


def open_event_bus(url: str | None, data_dir: str | Path) -> EventBus:
    """The event bus a URL names (``TRIMTAB_BUS`` wins over ``url``).

    Network buses connect lazily, so this can run before the event loop starts.
    """
    url = os.environ.get("TRIMTAB_BUS") or url or ""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from trimtab.bus.redis import RedisStreamBus

        rest, options = _split_options(url, _REDIS_BUS_OPTIONS)
        return RedisStreamBus.from_url(rest, **options)
    if url.startswith(("nats://", "tls://")):
        from trimtab.bus.nats import NatsJetStreamBus

        rest, options = _split_options(url, _NATS_OPTIONS)
        return NatsJetStreamBus(rest, **options)
    if url == "" or url.startswith(("sqlite:", "memory:")):
        return SqliteEventLog(_sqlite_path(url, data_dir, "events.sqlite"))
    raise ValueError(f"unknown event bus URL {url!r} (use sqlite:, memory:, redis:// or nats://)")


class BufferFull(RuntimeError):
    """The publisher's local buffer is full: the bus has been unreachable for too long."""


class BufferedPublisher:
    """Publishes to a bus through a bounded local buffer that survives bus outages.

    :meth:`publish` queues events and returns at once; a background task sends them in order,
    in batches, retrying with backoff while the bus is down. Retrying is safe: the buses drop
    events whose ``event_id`` they already logged. While a send is failing ``healthy`` is
    False (report it on ``/health``); when ``buffered`` would exceed ``max_buffered``,
    :meth:`publish` raises :class:`BufferFull` so the caller can refuse the request (the
    tracker keeps and resends its own batch) instead of dropping events silently.
    """

    def __init__(
        self,
        bus: EventBus,
        max_buffered: int = 100_000,
        batch: int = 1000,
        retry_s: float = 0.2,
        max_retry_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.max_buffered = max_buffered
        self.batch = batch
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.healthy = True
        self.published = 0
        self.failures = 0
        self.last_error: str = ""
        self.down_since: float | None = None
        self._queue: collections.deque[AnyEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Events accepted but not yet confirmed by the bus."""
        return len(self._queue)

    async def publish(self, events: list[AnyEvent]) -> int:
        """Queue events for publishing; returns how many were queued."""
        if len(self._queue) + len(events) > self.max_buffered:
            raise BufferFull(f"{len(self._queue)} events waiting for the bus ({self.last_error})")
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._queue.extend(events)
        if events:
            self._idle.clear()
            self._wakeup.set()
        return len(events)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is confirmed (``TimeoutError`` after timeout)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        delay = self.retry_s
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            chunk = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
            try:
                await self.bus.publish(chunk)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.healthy:
                    log.warning("event bus unreachable, buffering: %s", self.last_error)
                    self.healthy = False
                    self.down_since = time.monotonic()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
                continue
            for _ in range(len(chunk)):
                self._queue.popleft()
            self.published += len(chunk)
            if not self.healthy:
                log.warning("event bus reachable again; %d events buffered", len(self._queue))
                self.healthy = True
                self.down_since = None
            delay = self.retry_s

    async def close(self, timeout: float | None = 10.0) -> None:
        """Send what is buffered (up to ``timeout``), then stop."""
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
