"""trimtab.bus.redis, and the EventBus contract every bus must keep.

The contract tests (``test_contract_*``) run once per bus: the embedded SQLite log, Redis
Streams and NATS JetStream, all on real servers. The Redis-specific tests follow them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from trimtab.backends import DurablePublisher
from trimtab.bus import BusMessage, SqliteEventLog, message_id
from trimtab.bus.nats import NatsJetStreamBus
from trimtab.bus.redis import RedisStreamBus, partition_of
from trimtab.bus.spool import Spool
from trimtab.events import AnyEvent, Scroll, decode_one
from trimtab.sim.synthetic import synthetic_events

GROUP = "features"
OpenBus = Callable[[], Awaitable[Any]]


@pytest.fixture(params=["sqlite", "redis", "nats"])
async def open_bus(
    request: pytest.FixtureRequest, tmp_path: Path, namespace: str
) -> AsyncIterator[OpenBus]:
    """A factory of bus handles on one log: each call is a new client (another process)."""
    kind = request.param
    buses: list[Any] = []

    async def open_one() -> Any:
        if kind == "sqlite":
            bus: Any = SqliteEventLog(tmp_path / "events.sqlite")
        elif kind == "redis":
            bus = RedisStreamBus.from_url(
                request.getfixturevalue("redis_url"),
                prefix=namespace,
                partitions=4,
                claim_idle_ms=300,
                block_ms=100,
            )
        else:
            bus = NatsJetStreamBus(
                request.getfixturevalue("nats_url"),
                stream=namespace.upper(),
                prefix=namespace,
                partitions=4,
                ack_wait_s=1.0,
                fetch_timeout_s=0.2,
            )
        buses.append(bus)
        return bus

    yield open_one
    if kind != "sqlite":
        cleaner = await open_one()
        await cleaner.drop()
    for bus in buses:
        with contextlib.suppress(Exception):
            await bus.close()


def events_for(users: int, per_user: int, start: int = 0) -> list[AnyEvent]:
    """Interleaved scroll events: user ``k``'s events are ``e<k>-<i>`` in increasing ``i``."""
    return [
        Scroll(
            event_id=f"e{k}-{i}",
            user_id=f"user{k}",
            session_id=f"s{k}",
            ts=1.7e12 + i,
            depth=(i % 100) / 100,
        )
        for i in range(start, start + per_user)
        for k in range(users)
    ]


async def until(condition: Any, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def collect(
    batches: AsyncIterator[list[BusMessage]],
    n: int,
    bus: Any = None,
    timeout: float = 30.0,
) -> list[BusMessage]:
    """Read until ``n`` messages arrived (acknowledging each batch when ``bus`` is given)."""
    out: list[BusMessage] = []

    async def run() -> None:
        while len(out) < n:
            messages = await anext(batches)
            out.extend(messages)
            if bus is not None:
                await bus.ack(GROUP, [m.id for m in messages])

    await asyncio.wait_for(run(), timeout)
    return out


async def logged(bus: Any) -> int:
    """How many events the log holds."""
    if isinstance(bus, SqliteEventLog):
        return bus.count()
    return await bus.count()


async def remaining(bus: Any, group: str) -> int:
    """Messages of the group not acknowledged yet.

    The tests ask the server rather than wait for "no further batch": cancelling a blocked
    redis-py read can leave the connection waiting forever (seen with redis-py 8.1).
    """
    if isinstance(bus, SqliteEventLog):
        return bus.max_seq() - bus.cursor(group)
    # JetStream applies acks asynchronously (they are plain publishes): give the server a
    # moment to count the last ones before reading what is still pending.
    deadline = asyncio.get_running_loop().time() + 5.0
    pending = await bus.pending(group)
    while pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        pending = await bus.pending(group)
    return pending


# -- the contract ---------------------------------------------------------------------------
async def test_contract_publish_subscribe_ack(open_bus: OpenBus) -> None:
    bus = await open_bus()
    first = events_for(5, 10)
    assert await bus.publish(first) == len(first)
    async with contextlib.aclosing(bus.subscribe(GROUP, batch=20, consumer="c1")) as batches:
        got = await collect(batches, len(first), bus)
    assert sorted(m.event.event_id for m in got) == sorted(e.event_id for e in first)
    assert all(isinstance(m.event, Scroll) for m in got)
    assert await remaining(bus, GROUP) == 0

    # Acknowledged events are not delivered again; only the new ones are.
    later = events_for(5, 3, start=10)
    assert await bus.publish(later) == len(later)
    async with contextlib.aclosing(bus.subscribe(GROUP, batch=100, consumer="c1")) as batches:
        got = await collect(batches, len(later), bus)
    assert await remaining(bus, GROUP) == 0
    assert sorted(m.event.event_id for m in got) == sorted(e.event_id for e in later)


async def test_contract_publish_retry_is_not_delivered_twice(open_bus: OpenBus) -> None:
    bus = await open_bus()
    events = events_for(4, 25)
    assert await bus.publish(events[:60]) == 60
    # A retry of the whole batch (lost reply) plus the rest: only the rest is new.
    assert await bus.publish(events) == len(events) - 60
    assert await bus.publish(events[10:20]) == 0
    async with contextlib.aclosing(bus.subscribe(GROUP, batch=30, consumer="c1")) as batches:
        got = await collect(batches, len(events), bus)
    ids = [m.event.event_id for m in got]
    assert len(ids) == len(set(ids)) == len(events)
    assert await logged(bus) == len(events)
    assert await remaining(bus, GROUP) == 0


async def test_contract_unacked_messages_reach_another_consumer(open_bus: OpenBus) -> None:
    events = events_for(4, 25)
    first = await open_bus()
    await first.publish(events)
    dead = first.subscribe(GROUP, batch=40, consumer="a")
    taken = await anext(dead)
    assert taken, "the first consumer received a batch"
    await dead.aclose()
    await first.close()  # the consumer dies without acknowledging

    second = await open_bus()
    async with contextlib.aclosing(second.subscribe(GROUP, batch=40, consumer="b")) as batches:
        got: list[BusMessage] = []
        wanted = {e.event_id for e in events}

        async def until_all() -> None:
            while wanted - {m.event.event_id for m in got}:
                messages = await anext(batches)
                got.extend(messages)
                await second.ack(GROUP, [m.id for m in messages])

        await asyncio.wait_for(until_all(), 30)
    assert {m.event.event_id for m in taken} <= {m.event.event_id for m in got}
    assert await remaining(second, GROUP) == 0


async def test_contract_per_user_order(open_bus: OpenBus) -> None:
    bus = await open_bus()
    events = events_for(7, 60)
    for start in range(0, len(events), 37):
        await bus.publish(events[start : start + 37])
    async with contextlib.aclosing(bus.subscribe(GROUP, batch=50, consumer="c1")) as batches:
        got = await collect(batches, len(events), bus)
    by_user: dict[str, list[str]] = {}
    for m in got:
        by_user.setdefault(m.event.user_id, []).append(m.event.event_id)
    for user, ids in by_user.items():
        k = user.removeprefix("user")
        assert ids == [f"e{k}-{i}" for i in range(60)]


async def test_contract_many_events_in_batches(open_bus: OpenBus) -> None:
    bus = await open_bus()
    events = synthetic_events(20_000, users=2_000, seed=11)
    new = 0
    for start in range(0, len(events), 1000):
        new += await bus.publish(events[start : start + 1000])
    assert new == len(events)
    async with contextlib.aclosing(bus.subscribe(GROUP, batch=1000, consumer="c1")) as batches:
        got = await collect(batches, len(events), bus, timeout=120)
    assert len(got) == len({m.event.event_id for m in got}) == len(events)
    assert await remaining(bus, GROUP) == 0


# -- Redis specifics ------------------------------------------------------------------------
@pytest.fixture
async def redis_bus(redis_url: str, namespace: str) -> AsyncIterator[RedisStreamBus]:
    bus = RedisStreamBus.from_url(redis_url, prefix=namespace, partitions=8, block_ms=100)
    yield bus
    await bus.drop()
    await bus.close()


async def test_one_user_stays_in_one_partition(redis_bus: RedisStreamBus) -> None:
    events = synthetic_events(2_000, users=50, seed=5)
    await redis_bus.publish(events)
    for p, stream in enumerate(redis_bus.streams):
        entries = await redis_bus.client.xrange(stream)
        users = {decode_one(fields[b"e"]).user_id for _, fields in entries}
        assert all(partition_of(u, 8) == p for u in users)
    assert await redis_bus.count() == len(events)


async def test_dedupe_marker_shares_the_stream_slot(redis_bus: RedisStreamBus) -> None:
    event = events_for(1, 1)[0]
    await redis_bus.publish([event])
    stream = redis_bus.streams[partition_of(event.user_id, 8)]
    markers = [k async for k in redis_bus.client.scan_iter(match=f"{stream}:id:*")]
    assert markers == [f"{stream}:id:{message_id(event)}".encode()]
    assert key_slot(markers[0]) == key_slot(stream.encode())
    assert 0 < await redis_bus.client.ttl(markers[0]) <= redis_bus.dedupe_ttl_s


async def test_restarted_consumer_rereads_its_own_pending_first(
    redis_bus: RedisStreamBus,
) -> None:
    events = events_for(3, 20)
    await redis_bus.publish(events)
    crashed = redis_bus.subscribe(GROUP, batch=25, consumer="worker")
    first = await anext(crashed)
    await crashed.aclose()  # crash: nothing acknowledged
    async with contextlib.aclosing(redis_bus.subscribe(GROUP, 25, consumer="worker")) as again:
        replay = await anext(again)
    assert [m.id for m in replay] == [m.id for m in first]


async def test_publisher_survives_a_redis_restart(
    own_server: Any, namespace: str, tmp_path: Any
) -> None:
    """Kill and restart our own Redis mid-stream: what the publisher acknowledged (to the
    bus, or to its spool while Redis is down) all reaches the log, once."""
    server = own_server("redis")
    bus = RedisStreamBus.from_url(server.url, prefix=namespace, partitions=4)
    publisher = DurablePublisher(
        bus, Spool(tmp_path / "spool.sqlite"), batch=500, retry_s=0.05, publish_timeout_s=1.0
    )
    events = synthetic_events(20_000, users=300, seed=9)
    try:
        for i, start in enumerate(range(0, len(events), 500)):
            await publisher.publish(events[start : start + 500])
            if i == 15:
                server.stop(signal.SIGKILL)  # mid-stream, acknowledged writes are on disk
            if i == 25:
                await until(lambda: not publisher.healthy)  # degraded while it is down
                assert publisher.buffered > 0
                server.start()
            await asyncio.sleep(0)
        await publisher.flush(timeout=60)
        assert publisher.healthy and publisher.buffered == 0
        assert await bus.count() == len(events)
        ids = [e.event_id async for e in bus.iter_all()]
        assert len(set(ids)) == len(ids) == len(events)
    finally:
        await publisher.close(timeout=1)
        await bus.close()
