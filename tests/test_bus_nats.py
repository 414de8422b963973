"""trimtab.bus.nats on the real NATS JetStream server (the shared contract is in test_bus_redis)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from trimtab.backends import DurablePublisher
from trimtab.bus import message_id
from trimtab.bus.nats import NatsJetStreamBus
from trimtab.bus.redis import partition_of
from trimtab.bus.spool import Spool
from trimtab.sim.synthetic import synthetic_events


async def until(condition: Any, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def bus(nats_url: str, namespace: str) -> AsyncIterator[NatsJetStreamBus]:
    b = NatsJetStreamBus(
        nats_url, stream=namespace.upper(), prefix=namespace, partitions=8,
        ack_wait_s=0.5, fetch_timeout_s=0.2,
    )  # fmt: skip
    yield b
    await b.drop()
    await b.close()


async def test_messages_carry_partition_subject_and_msg_id(bus: NatsJetStreamBus) -> None:
    events = synthetic_events(300, users=40, seed=4)
    assert await bus.publish(events) == len(events)
    for seq in (1, 150, 300):
        raw = await bus.js.get_msg(bus.stream, seq)
        event = events[seq - 1]
        assert raw.subject == f"{bus.prefix}.events.{partition_of(event.user_id, 8)}"
        assert raw.headers["Nats-Msg-Id"] == message_id(event)
    info = await bus.js.stream_info(bus.stream)
    assert info.config.duplicate_window == pytest.approx(bus.duplicate_window_s)


async def test_a_joining_member_gets_the_dead_members_batch_first_in_order(
    bus: NatsJetStreamBus, nats_url: str
) -> None:
    events = synthetic_events(500, users=20, seed=8)
    await bus.publish(events)
    dead = NatsJetStreamBus(
        nats_url, stream=bus.stream, prefix=bus.prefix, partitions=8, ack_wait_s=0.5
    )
    taken = await anext(dead.subscribe("features", batch=100))
    await dead.close()  # died holding 100 unacknowledged messages

    async with contextlib.aclosing(bus.subscribe("features", batch=100)) as batches:
        first = await asyncio.wait_for(anext(batches), 20)
    # The redelivered batch comes first and in stream order (fetches may return fewer).
    taken_ids = [m.event.event_id for m in taken]
    assert taken_ids == [e.event_id for e in events[: len(taken)]]
    assert [m.event.event_id for m in first] == taken_ids[: len(first)]


async def test_deleting_what_is_gone_already_is_not_an_error(bus: NatsJetStreamBus) -> None:
    """A consumer meeting an erased user's event and the erasure both delete it: whichever
    comes second deletes nothing and does not fail (the erasure would answer 503)."""
    events = synthetic_events(200, users=10, seed=5)
    await bus.publish(events)
    user = events[0].user_id
    mine = sum(e.user_id == user for e in events)
    async with contextlib.aclosing(bus.subscribe("features", batch=200)) as batches:
        delivered = [m for m in await anext(batches) if m.event.user_id == user]
    assert delivered
    assert await bus.delete([m.id for m in delivered]) == len(delivered)
    assert await bus.delete([m.id for m in delivered]) == 0
    assert await bus.erase_user(user) == mine - len(delivered)
    assert await bus.erase_user(user) == 0
    assert await bus.count() == len(events) - mine


async def test_publisher_survives_a_nats_restart(
    own_server: Any, namespace: str, tmp_path: Any
) -> None:
    """Stop and restart our own NATS mid-stream: what the publisher acknowledged (to the
    bus, or to its spool while NATS is down) all reaches the log, once."""
    server = own_server("nats")
    bus = NatsJetStreamBus(
        server.url, stream=namespace.upper(), prefix=namespace, partitions=4,
        publish_timeout_s=1.0,
    )  # fmt: skip
    publisher = DurablePublisher(
        bus, Spool(tmp_path / "spool.sqlite"), batch=500, retry_s=0.05, publish_timeout_s=1.0
    )
    events = synthetic_events(10_000, users=300, seed=9)
    try:
        for i, start in enumerate(range(0, len(events), 500)):
            await publisher.publish(events[start : start + 500])
            if i == 5:
                await publisher.flush(timeout=30)
                server.stop(signal.SIGTERM)
            if i == 12:
                await until(lambda: not publisher.healthy)  # degraded while it is down
                assert publisher.buffered > 0
                server.start()
        await publisher.flush(timeout=90)
        assert publisher.healthy and publisher.buffered == 0
        assert await bus.count() == len(events)
        ids = [e.event_id async for e in bus.iter_all()]
        assert len(set(ids)) == len(ids) == len(events)
    finally:
        await publisher.close(timeout=1)
        await bus.close()


async def test_durability_reads_the_servers_fsync_policy(
    own_server: Any, namespace: str, nats_url: str
) -> None:
    """Our own server (the nats-server wheel, ``sync_interval: always``) is reported as fsync
    per write, read from its monitoring endpoint given in the bus URL; a bus URL without one
    says the policy is unseen and how to check it; an unreachable monitor says so."""
    from trimtab.backends import open_event_bus

    server = own_server("nats")
    checked = open_event_bus(
        f"{server.url}?stream={namespace.upper()}&prefix={namespace}&monitor={server.monitor_url}",
        ".",
    )
    unseen = NatsJetStreamBus(nats_url, stream=namespace.upper(), prefix=namespace)
    broken = NatsJetStreamBus(
        server.url, stream=namespace.upper(), prefix=namespace, monitor="http://127.0.0.1:9"
    )
    try:
        said = await checked.durability()
        assert said.startswith("fsync per write (jetstream sync_interval: always)"), said
        assert "file storage, 1 replica(s)" in said
        said = await unseen.durability()
        assert "monitor=" in said and "every 2 min by default" in said, said
        said = await broken.durability()
        assert "fsync policy unknown: monitor http://127.0.0.1:9" in said, said
    finally:
        for bus in (checked, unseen, broken):
            with contextlib.suppress(Exception):
                await bus.drop()  # type: ignore[attr-defined]
            await bus.close()
