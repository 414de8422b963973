"""trimtab.processor: bus → features → state store, then ack; crash-safe and CAS-safe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trimtab.bus import BusMessage, SqliteEventLog
from trimtab.bus.nats import NatsJetStreamBus
from trimtab.bus.redis import RedisStreamBus
from trimtab.config import parse_config
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, decode_state
from trimtab.processor import BusConsumer
from trimtab.sim.synthetic import synthetic_events
from trimtab.store.redis import RedisStateStore
from trimtab_bench.core import bench_rules

SITE = bench_rules()[0]  # the benchmark site: realistic features and slots
SPECS = parse_config(SITE).feature_specs()


def reference(events: list[AnyEvent]) -> FeatureProcessor:
    """The uninterrupted in-memory run."""
    fp = FeatureProcessor(SPECS)
    fp.apply(events)
    return fp


@pytest.fixture
async def store(redis_url: str, namespace: str) -> AsyncIterator[RedisStateStore]:
    s = RedisStateStore.from_url(redis_url, prefix=namespace)
    yield s
    async for user_id in s.user_ids():
        await s.delete(user_id)
    await s.close()


async def assert_same_states(store: RedisStateStore, expected: FeatureProcessor) -> None:
    stored = await store.get_many(expected.states)
    assert set(stored) == set(expected.states)
    assert {u async for u in store.user_ids()} == set(expected.states)
    for user_id, state in expected.states.items():
        assert decode_state(stored[user_id]) == state, user_id


async def make_bus(kind: str, request: pytest.FixtureRequest, namespace: str, **extra: Any) -> Any:
    if kind == "redis":
        return RedisStreamBus.from_url(
            request.getfixturevalue("redis_url"), prefix=namespace, partitions=8, **extra
        )
    return NatsJetStreamBus(
        request.getfixturevalue("nats_url"),
        stream=namespace.upper(),
        prefix=namespace,
        partitions=8,
        **extra,
    )


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_processor_matches_an_in_memory_run(
    kind: str, request: pytest.FixtureRequest, namespace: str, store: RedisStateStore
) -> None:
    events = synthetic_events(5_000, users=300, seed=21)
    bus = await make_bus(kind, request, namespace, **({"block_ms": 100} if kind == "redis" else {}))
    try:
        for start in range(0, len(events), 500):
            await bus.publish(events[start : start + 500])
        await bus.publish(events[1000:1500])  # a retried batch
        await bus.ensure_group("features")  # so "pending" counts from the first event
        processor = BusConsumer(bus, store, FeatureProcessor(SPECS), batch=400, consumer="p")
        task = asyncio.create_task(processor.run())
        deadline = time.monotonic() + 60
        while await bus.pending("features") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await bus.pending("features") == 0
        assert processor.stats.events == len(events)
        await assert_same_states(store, reference(events))
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a read interrupted by the teardown below
    finally:
        await bus.drop()
        await bus.close()


async def test_stale_cached_state_is_not_written_over_newer(store: RedisStateStore) -> None:
    """Two processors share a user; the one with a stale cache reloads instead of clobbering."""
    events = synthetic_events(400, users=1, seed=3)
    first, second, third = events[:100], events[100:250], events[250:]
    log = SqliteEventLog(":memory:")
    a = BusConsumer(log, store, FeatureProcessor(SPECS))
    b = BusConsumer(log, store, FeatureProcessor(SPECS))

    def batch(evs: list[AnyEvent]) -> list[BusMessage]:
        return [BusMessage(str(i + 1), e) for i, e in enumerate(evs)]

    await a.process(batch(first))  # a caches the user at version 1
    await b.process(batch(second))  # b loads version 1, writes version 2
    await a.process(batch(third))  # a's cache is stale: conflict, reload, re-apply
    assert a.stats.conflicts == 1
    await assert_same_states(store, reference(events))
    log.close_sync()


# -- the crash test -------------------------------------------------------------------------
def start_processor(bus_url: str, state_url: str, config: Path, consumer: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trimtab.processor", "--bus", bus_url, "--state", state_url,
         "--config", str(config), "--group", "features", "--consumer", consumer,
         "--batch", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TRIMTAB_BUS": "", "TRIMTAB_STATE": ""},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_sigkill_ten_times_loses_and_doubles_nothing(
    kind: str,
    request: pytest.FixtureRequest,
    namespace: str,
    store: RedisStateStore,
    redis_url: str,
    tmp_path: Path,
) -> None:
    n_events = int(os.environ.get("TRIMTAB_CRASH_EVENTS", "200000"))
    events = synthetic_events(n_events, users=5_000, seed=17)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(SITE))
    if kind == "redis":
        bus = await make_bus(kind, request, namespace)
        bus_url = f"{request.getfixturevalue('redis_url')}?prefix={namespace}&partitions=8"
    else:
        # Short ack wait so a killed processor's batch comes back quickly.
        bus = await make_bus(kind, request, namespace, ack_wait_s=2.0)
        bus_url = (
            f"{request.getfixturevalue('nats_url')}?stream={namespace.upper()}"
            f"&prefix={namespace}&partitions=8&ack_wait_s=2&max_ack_pending=1000"
        )
    state_url = f"{redis_url}?prefix={namespace}"
    rnd = random.Random(5)

    async def publish_all() -> None:
        for start in range(0, n_events, 1000):
            chunk = events[start : start + 1000]
            await bus.publish(chunk)
            if rnd.random() < 0.05:
                await bus.publish(chunk)  # a retried publish
            await asyncio.sleep(0)

    await bus.ensure_group("features")  # so "pending" counts from the first event
    started = time.monotonic()
    proc = start_processor(bus_url, state_url, config, "worker")
    try:
        await bus.publish(events[:1000])
        publisher = asyncio.create_task(publish_all())
        # Kill at 10 random points spread over the run (measured by what is left to do).
        kills = sorted((rnd.uniform(0.05, 0.95) * n_events for _ in range(10)), reverse=True)
        for threshold in kills:
            while True:
                left = await bus.pending("features") + (n_events - await bus.count())
                if left <= threshold:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(rnd.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = start_processor(bus_url, state_url, config, "worker")
        await publisher
        deadline = time.monotonic() + 300
        while await bus.pending("features") and time.monotonic() < deadline:
            assert proc.poll() is None, "the processor exited"
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)

        assert await bus.count() == n_events
        ids = [e.event_id async for e in bus.iter_all()]
        assert len(ids) == len(set(ids)) == n_events  # 0 lost, 0 logged twice
        await assert_same_states(store, reference(events))  # 0 double-counted
        print(f"\n{kind}: {n_events} events with 10 SIGKILLs in {elapsed:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(Exception):
            await bus.drop()
        await bus.close()
