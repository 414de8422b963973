"""The durable event log.

Every accepted event is appended once (keyed by its user and ``event_id``, so a retried batch is
not logged twice, and one user reusing another's ``event_id`` cannot keep that event out of the
log) before anything downstream trusts it. Consumers read in order by group and acknowledge
what they have applied, so a restarted consumer resumes where it stopped.

The embedded :class:`SqliteEventLog` keeps the log in a SQLite file in WAL mode; Redis Streams
and NATS JetStream implement the same :class:`EventBus` protocol for scale-out.
"""

from __future__ import annotations

import hashlib
import os
import socket
import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, runtime_checkable

import msgspec

from trimtab.events import AnyEvent


class BusMessage(msgspec.Struct, frozen=True):
    """An event as delivered by the bus, with the id to acknowledge it by."""

    id: str
    event: AnyEvent


def message_id(event: AnyEvent) -> str:
    """The id a bus deduplicates an event by: user and ``event_id``, hashed (fixed length,
    and no user id in Redis marker keys or NATS headers).

    >>> from trimtab.events import Scroll
    >>> a = Scroll(event_id="e1", user_id="u1", session_id="s", ts=1.0, depth=0.5)
    >>> b = Scroll(event_id="e1", user_id="u2", session_id="s", ts=1.0, depth=0.5)
    >>> message_id(a) == message_id(a) != message_id(b)
    True
    """
    key = f"{event.user_id}\x00{event.event_id}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@runtime_checkable
class EventBus(Protocol):
    """What every event log offers its writers and consumers (SQLite, Redis, NATS)."""

    async def publish(self, events: list[AnyEvent]) -> int:
        """Append events durably; returns how many were new (not already logged)."""
        ...

    def subscribe(
        self, group: str, batch: int = 500, consumer: str | None = None
    ) -> AsyncGenerator[list[BusMessage], None]:
        """Batches of not-yet-acknowledged events for a consumer group, in log order.

        ``consumer`` names this member of the group where members share the work (Redis);
        a log with one reader per group ignores it.
        """
        ...

    async def ack(self, group: str, ids: list[str]) -> None: ...

    async def delete(self, ids: list[str]) -> int:
        """Delete delivered messages (events of erased users a consumer met)."""
        ...

    async def erase_user(self, user_id: str) -> int:
        """Delete every logged event of a user (erasure); how many."""
        ...

    async def compact(self, done: set[str] | None = None) -> bool:
        """After erasures: rewrite what still holds erased bytes; False while the server is
        busy rewriting (try again soon). ``done`` names servers already asked (one Redis may
        hold the state and the log)."""
        ...

    async def durability(self) -> str:
        """What an acknowledged write survives, in words (for ``/health``)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ReplayableBus(EventBus, Protocol):
    """A shared bus whose whole log can be read back (``trimtab export``): Redis, NATS."""

    async def count(self) -> int:
        """How many events the log holds."""
        ...

    def iter_all(self, batch: int = 10_000) -> AsyncIterator[AnyEvent]:
        """Every logged event, oldest first."""
        ...


from trimtab.bus.sqlite import SqliteEventLog  # noqa: E402

__all__ = ["BusMessage", "EventBus", "ReplayableBus", "SqliteEventLog", "message_id"]


def partition_of(user_id: str, partitions: int) -> int:
    """The partition of a user: stable across processes and restarts.

    >>> partition_of("u42", 16) == partition_of("u42", 16)
    True
    """
    return zlib.crc32(user_id.encode()) % partitions


def default_consumer() -> str:
    """A consumer name unique to this process: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"
