"""Helpers the tests share (imported as ``support``: pytest puts ``tests/`` on the path).

Nothing here comes from the benchmark package: tests stand on trimtab's public parts and
on these few lines of their own. The benchmarks (``trimtab_bench``) take the Chromium launch
from here (``tests.support``), so tests and benchmarks drive the same browser.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, with nothing that would reach outside this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium (never a browser Playwright downloads) from a Playwright session;
    both are untyped here, as Playwright is a test and benchmark tool."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def simulated_events(folder: Path, seed: int, sessions: int, users: int = 300) -> Path:
    """``folder`` with an ``events.sqlite`` of ``sessions`` simulated visits by ``users``
    readers (the model tests' training data; a module keeps one, see ``data_dir``)."""
    from trimtab.bus.sqlite import SqliteEventLog
    from trimtab.sim.simulator import Simulator

    sim = Simulator(seed=seed, n_users=users)
    log = SqliteEventLog(folder / "events.sqlite")
    for events in sim.sessions(sessions):
        log.append_sync(events)
    log.close_sync()
    return folder


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
