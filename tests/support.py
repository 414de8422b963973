"""Helpers the tests share (imported as ``support``: pytest puts ``tests/`` on the path).

Nothing here comes from the benchmark package: tests stand on trimtab's public parts and
on these few lines of their own.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_namespace(bus_url: str, prefix: str, root: Path) -> None:
    """Remove what a test left in the shared Redis (keys under ``prefix``) and NATS (the
    bus's stream)."""
    import redis

    from trimtab.backends import open_event_bus

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])
    client.close()
    if bus_url.startswith("nats"):

        async def drop() -> None:
            bus = open_event_bus(bus_url, root)
            await bus.drop()
            await bus.close()

        asyncio.run(drop())
