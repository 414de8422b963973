"""The durable event log.

Every accepted event is appended once (keyed by ``event_id``, so a retried batch is not logged
twice) before anything downstream trusts it. Consumers read in order by group and acknowledge
what they have applied, so a restarted consumer resumes where it stopped.

The embedded :class:`SqliteEventLog` keeps the log in a SQLite file in WAL mode; Redis Streams
and NATS JetStream implement the same :class:`EventBus` protocol for scale-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import msgspec

from trimtab.events import AnyEvent


class BusMessage(msgspec.Struct, frozen=True):
    """An event as delivered by the bus, with the id to acknowledge it by."""

    id: str
    event: AnyEvent


@runtime_checkable
class EventBus(Protocol):
    async def publish(self, events: list[AnyEvent]) -> int:
        """Append events durably; returns how many were new (not already logged)."""
        ...

    def subscribe(self, group: str, batch: int = 500) -> AsyncIterator[list[BusMessage]]:
        """Batches of not-yet-acknowledged events for a consumer group, in log order."""
        ...

    async def ack(self, group: str, ids: list[str]) -> None: ...

    async def close(self) -> None: ...


from trimtab.bus.sqlite import SqliteEventLog  # noqa: E402

__all__ = ["BusMessage", "EventBus", "SqliteEventLog"]
