"""Choosing the event bus and the state store from a URL, and publishing durably through outages.

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
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trimtab.bus import EventBus, SqliteEventLog
from trimtab.bus.spool import Spool
from trimtab.events import AnyEvent
from trimtab.logschema import EVENTS_FILE
from trimtab.store import SqliteStateStore, StateStore
from trimtab.store.sqlite import StorageError

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
    "replicas": int,
    "monitor": str,
}


def _split_options(url: str, known: Mapping[str, type]) -> tuple[str, dict[str, Any]]:
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
        return SqliteEventLog(_sqlite_path(url, data_dir, EVENTS_FILE))
    raise ValueError(f"unknown event bus URL {url!r} (use sqlite:, memory:, redis:// or nats://)")


class BufferFull(StorageError):
    """The spool is full or cannot be written: events could not be made durable (503)."""


class DurablePublisher:
    """Publishes to a bus so that an acknowledged event is always durable.

    :meth:`publish` returns only once its events are confirmed by the bus, or committed to the
    local :class:`~trimtab.bus.spool.Spool` when the bus cannot confirm them within
    ``publish_timeout_s``; otherwise it raises :class:`BufferFull` (a
    :class:`~trimtab.store.sqlite.StorageError`), and the collector answers 503 with
    ``Retry-After``. Concurrent calls are sent together, one bus round trip for all of them.

    While the spool holds events, new ones are spooled behind them (one user's events stay in
    order), and a background task sends the spool to the bus in order, deleting rows only after
    the bus confirmed them. Retrying is safe: the buses drop events whose message id they have
    already logged. While a send is failing ``healthy`` is False (``/health`` says degraded).
    Events of users in ``erased`` are dropped from the spool instead of sent.
    """

    def __init__(
        self,
        bus: EventBus,
        spool: Spool,
        *,
        batch: int = 1000,
        retry_s: float = 0.2,
        max_retry_s: float = 5.0,
        publish_timeout_s: float = 2.0,
        confirm_timeout_s: float = 15.0,
        max_spooled: int = 5_000_000,
        erased: set[str] | None = None,
    ) -> None:
        self.bus = bus
        self.spool = spool
        self.batch = batch
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.publish_timeout_s = publish_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.max_spooled = max_spooled
        self.erased = erased if erased is not None else set()
        self.healthy = True
        self.published = 0
        self.spooled_total = 0
        self.failures = 0
        self.last_error: str = ""
        self.down_since: float | None = None
        self._spooled = spool.count_sync()  # rows waiting in the spool (this process's view)
        self._pending: list[tuple[list[AnyEvent], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._drain_wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._spool_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def buffered(self) -> int:
        """Events acknowledged but not yet confirmed by the bus (they are in the spool)."""
        return self._spooled

    def start(self) -> None:
        """Start sending (and replay a spool left by an earlier run); restart a dead task."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._send_forever()),
                asyncio.create_task(self._drain_forever()),
            ]
            self._drain_wakeup.set()
            return
        for i, (task, loop) in enumerate(
            zip(self._tasks, (self._send_forever, self._drain_forever), strict=True)
        ):
            if task.done():  # never expected: say so, and carry on
                if not task.cancelled() and task.exception() is not None:
                    log.error("publisher task died, restarting it", exc_info=task.exception())
                self._tasks[i] = asyncio.create_task(loop())

    async def publish(self, events: list[AnyEvent]) -> int:
        """Return once ``events`` are durable (bus or spool); returns how many were given.

        Raises :class:`BufferFull` (nothing acknowledged) when they cannot be made durable, or
        not within ``confirm_timeout_s``; sending them again is safe.
        """
        if not events:
            return 0
        self.start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((events, done))
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(done), self.confirm_timeout_s)
        except TimeoutError:
            raise BufferFull("events not confirmed in time; send them again", 5) from None
        return len(events)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the spool is empty: every acknowledged event is in the bus."""
        self.start()
        await asyncio.wait_for(self._wait_drained(), timeout)

    async def _wait_drained(self) -> None:
        while self._spooled or self._pending:
            self._drained.clear()
            self._drain_wakeup.set()
            await self._drained.wait()

    async def _send_forever(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            pending, self._pending = self._pending, []
            events = [e for chunk, _ in pending for e in chunk]
            futures = [done for _, done in pending]
            try:
                error = await self._send(events)
            except asyncio.CancelledError:
                _settle(futures, BufferFull("shutting down; send again"))
                raise
            except Exception as exc:  # never let the sender die: these callers get a 503
                log.exception("publishing failed")
                error = BufferFull(f"events not stored: {type(exc).__name__}: {exc}", 5)
            _settle(futures, error)
            if not self._pending:
                self._drained.set()

    async def _send(self, events: list[AnyEvent]) -> Exception | None:
        """To the bus when nothing is spooled (else behind the spool); to the spool on failure."""
        if self._spooled == 0:
            try:
                await asyncio.wait_for(self.bus.publish(events), self.publish_timeout_s)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped
                self._down(RuntimeError("publish cancelled by the bus client"))
                return await self._to_spool(events)
            except Exception as exc:
                self._down(exc)
                return await self._to_spool(events)
            self.published += len(events)
            self._up()
            return None
        return await self._to_spool(events)

    async def _to_spool(self, events: list[AnyEvent]) -> Exception | None:
        async with self._spool_lock:
            if self._spooled + len(events) > self.max_spooled:
                return BufferFull(
                    f"{self._spooled} events spooled waiting for the bus ({self.last_error})", 5
                )
            try:
                await asyncio.to_thread(self.spool.append_sync, events)
            except StorageError as exc:
                return BufferFull(f"event bus unavailable ({self.last_error}) and {exc}", 5)
            self._spooled += len(events)
            self.spooled_total += len(events)
        self._drain_wakeup.set()
        return None

    async def _drain_forever(self) -> None:
        delay = self.retry_s
        while True:
            if self._spooled == 0:
                self._drained.set()
                self._drain_wakeup.clear()
                await self._drain_wakeup.wait()
                if self._spooled == 0:
                    try:
                        async with self._spool_lock:  # rows another process (or run) spooled?
                            self._spooled = await asyncio.to_thread(self.spool.count_sync)
                    except Exception as exc:  # the spool file is busy (a rewrite): later
                        log.warning("spool not readable now: %s", exc)
                        await asyncio.sleep(delay)
                continue
            try:
                rows = await asyncio.to_thread(self.spool.read_sync, self.batch)
                if not rows:
                    async with self._spool_lock:
                        self._spooled = await asyncio.to_thread(self.spool.count_sync)
                    continue
                events = [e for _, e in rows if e.user_id not in self.erased]
                if events:
                    await asyncio.wait_for(self.bus.publish(events), self.publish_timeout_s)
                await asyncio.to_thread(self.spool.delete_through_sync, rows[-1][0])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped
                await asyncio.sleep(delay)  # the bus client gave up on a call: try again
                continue
            except Exception as exc:
                self._down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
                continue
            self._spooled = max(0, self._spooled - len(rows))
            self.published += len(events)
            self._up()
            delay = self.retry_s

    def _down(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.healthy:
            log.warning("event bus unreachable, spooling: %s", self.last_error)
            self.healthy = False
            self.down_since = time.monotonic()

    def _up(self) -> None:
        if not self.healthy:
            log.warning("event bus reachable again; %d events still spooled", self._spooled)
            self.healthy = True
            self.down_since = None

    def erase_user(self, user_id: str) -> int:
        """Drop a user's spooled events (they are in ``erased`` already)."""
        deleted = self.spool.erase_user(user_id)
        self._spooled = max(0, self._spooled - deleted)
        return deleted

    async def close(self, timeout: float | None = 10.0) -> None:
        """Send what is spooled (up to ``timeout``), then stop; the rest stays spooled."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await self.flush(timeout)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        pending, self._pending = self._pending, []
        _settle([done for _, done in pending], BufferFull("shutting down; send again"))
        self.spool.close_sync()


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for done in futures:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
