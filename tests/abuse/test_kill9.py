"""kill -9 under load: an acknowledged event is never lost, never logged twice (issue 11).

A tracker-like load (4 senders; a batch is sent again until it is acknowledged) runs against
`trimtab serve` while something is killed with SIGKILL ten times: the server itself
(embedded, and scaled on each bus), the bus server, or the server during a bus outage. Then
every acknowledged event id is looked up in the log. Each test prints its row of the table in
``docs/reliability.md``::

    pytest tests/abuse/test_kill9.py -m slow -s
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from abuse_harness import (
    Load,
    Server,
    Tally,
    bus_event_ids,
    clean_env,
    site_config,
    sqlite_event_ids,
    tally,
    wait_for,
)

pytestmark = [pytest.mark.slow]
ROUNDS = 10
USERS = [f"reader-{i}" for i in range(200)]


def _report(name: str, counts: Tally, load: Load) -> None:
    print(f"\n{counts.row(name)}  (sent {load.sent:,} requests, {load.failures:,} failed "
          f"connections, {load.refused:,} refusals)")  # fmt: skip
    assert counts.acked > 1000
    assert counts.lost == 0, counts
    assert counts.doubled == 0, counts


def _grow(load: Load, by: int, timeout: float = 60.0) -> None:
    target = load.acked_count() + by
    assert wait_for(lambda: load.acked_count() >= target, timeout, every=0.05)


def _kill_server_rounds(server: Server, load: Load, rng: random.Random) -> None:
    for _ in range(ROUNDS):
        _grow(load, rng.randrange(200, 2000))
        server.kill(signal.SIGKILL)
        server.start()


def test_kill9_embedded(tmp_path):
    server = Server(site_config(tmp_path), tmp_path / "data").start()
    load = Load(lambda: server, USERS, threads=4, batch=20).start()
    try:
        _kill_server_rounds(server, load, random.Random(1))
        _grow(load, 500)
    finally:
        load.stop()
        server.kill()
    counts = tally(load.acked, sqlite_event_ids(tmp_path / "data" / "events.sqlite"))
    _report("embedded (SQLite), trimtab killed", counts, load)


def _scaled(tmp_path, own_server, kind: str):
    redis_server = own_server("redis")
    state = f"{redis_server.url}?prefix=k9"
    if kind == "redis":
        bus_server, bus = redis_server, f"{redis_server.url}?prefix=k9"
    else:
        bus_server = own_server("nats")
        bus = f"{bus_server.url}?stream=K9&prefix=k9"
    env = clean_env(TRIMTAB_STATE=state, TRIMTAB_BUS=bus)
    server = Server(site_config(tmp_path), tmp_path / "data", env).start()
    return server, bus_server, bus


def _drained(server: Server) -> None:
    assert wait_for(lambda: server.health()["buffered"] == 0, 120), server.health()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_kill9_scaled(tmp_path, own_server, kind):
    server, _, bus = _scaled(tmp_path, own_server, kind)
    load = Load(lambda: server, USERS, threads=4, batch=20).start()
    try:
        _kill_server_rounds(server, load, random.Random(2))
        _grow(load, 500)
    finally:
        load.stop()
    try:
        _drained(server)
    finally:
        server.kill()
    counts = tally(load.acked, bus_event_ids(bus, tmp_path))
    _report(f"scaled ({kind} bus), trimtab killed", counts, load)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_kill9_of_the_bus_server(tmp_path, own_server, kind):
    """The bus server (Redis with AOF fsync always; JetStream on file storage) is killed under
    load; state lives on another Redis, so only the bus dies. What trimtab acknowledged while
    it was down is in its spool."""
    state_server = own_server("redis")
    bus_server = own_server(kind)
    bus = (
        f"{bus_server.url}?prefix=k9"
        if kind == "redis"
        else f"{bus_server.url}?stream=K9&prefix=k9"
    )
    env = clean_env(TRIMTAB_STATE=f"{state_server.url}?prefix=k9", TRIMTAB_BUS=bus)
    server = Server(site_config(tmp_path), tmp_path / "data", env).start()
    load = Load(lambda: server, USERS, threads=4, batch=20).start()
    rng = random.Random(4)
    try:
        for _ in range(ROUNDS):
            _grow(load, rng.randrange(200, 2000))
            bus_server.stop(signal.SIGKILL)
            time.sleep(rng.uniform(0.2, 1.5))
            bus_server.start()
        _grow(load, 500)
    finally:
        load.stop()
    try:
        _drained(server)
    finally:
        server.kill()
    counts = tally(load.acked, bus_event_ids(bus, tmp_path))
    _report(f"scaled ({kind} bus), bus server killed", counts, load)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_kill9_during_a_bus_outage(tmp_path, own_server, kind):
    """The bus is down; trimtab is killed ten times while it acknowledges into its spool;
    the bus comes back: the restarted process sends the spool, and nothing is missing."""
    state_server = own_server("redis")
    bus_server = own_server(kind)
    bus = (
        f"{bus_server.url}?prefix=k9"
        if kind == "redis"
        else f"{bus_server.url}?stream=K9&prefix=k9"
    )
    env = clean_env(TRIMTAB_STATE=f"{state_server.url}?prefix=k9", TRIMTAB_BUS=bus)
    server = Server(site_config(tmp_path), tmp_path / "data", env).start()
    load = Load(lambda: server, USERS, threads=4, batch=20).start()
    rng = random.Random(5)
    try:
        _grow(load, 1000)
        bus_server.stop(signal.SIGKILL)
        for _ in range(ROUNDS):
            _grow(load, rng.randrange(200, 1500))
            server.kill(signal.SIGKILL)
            server.start()
        assert server.health()["buffered"] > 0  # all of it only in the spool
        bus_server.start()
        _grow(load, 500)
    finally:
        load.stop()
    try:
        _drained(server)
    finally:
        server.kill()
    counts = tally(load.acked, bus_event_ids(bus, tmp_path))
    _report(f"scaled ({kind} bus), trimtab killed during a bus outage", counts, load)
