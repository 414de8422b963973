"""trimtab.backends: choosing backends from URLs, and the buffered publisher's bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trimtab.backends import BufferFull, DurablePublisher, open_event_bus, open_state_store
from trimtab.bus import SqliteEventLog, message_id
from trimtab.bus.nats import NatsJetStreamBus
from trimtab.bus.redis import RedisStreamBus
from trimtab.bus.spool import Spool
from trimtab.events import AnyEvent
from trimtab.sim.synthetic import synthetic_events
from trimtab.store import SqliteStateStore
from trimtab.store.redis import RedisStateStore


@pytest.mark.parametrize(
    ("url", "kind", "attrs"),
    [
        (None, SqliteEventLog, {}),
        ("sqlite:", SqliteEventLog, {}),
        ("memory:", SqliteEventLog, {"path": ":memory:"}),
        ("redis://127.0.0.1:6379/0?prefix=x&partitions=4", RedisStreamBus,
         {"prefix": "x", "partitions": 4}),
        ("nats://127.0.0.1:4222?stream=S&ack_wait_s=2.5", NatsJetStreamBus,
         {"stream": "S", "ack_wait_s": 2.5}),
    ],
)  # fmt: skip
async def test_open_event_bus(
    url: str | None, kind: type, attrs: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("TRIMTAB_BUS", raising=False)
    bus = open_event_bus(url, tmp_path)
    assert isinstance(bus, kind)
    for name, value in attrs.items():
        assert getattr(bus, name) == value
    if kind is SqliteEventLog and url != "memory:":
        assert Path(bus.path) == tmp_path / "events.sqlite"
    await bus.close()


async def test_environment_overrides_the_url(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRIMTAB_STATE", "redis://127.0.0.1:6379/0?prefix=env")
    monkeypatch.setenv("TRIMTAB_BUS", f"sqlite:{tmp_path / 'other.sqlite'}")
    store = open_state_store("memory:", tmp_path)
    assert isinstance(store, RedisStateStore) and store.prefix == "env"
    bus = open_event_bus(None, tmp_path)
    assert isinstance(bus, SqliteEventLog) and bus.path == str(tmp_path / "other.sqlite")
    await store.close()
    await bus.close()


async def test_open_state_store_defaults_and_errors(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("TRIMTAB_STATE", raising=False)
    store = open_state_store(None, tmp_path)
    assert isinstance(store, SqliteStateStore) and store.path == str(tmp_path / "state.sqlite")
    await store.close()
    with pytest.raises(ValueError, match="unknown state store URL"):
        open_state_store("mongodb://x", tmp_path)
    with pytest.raises(ValueError, match="unknown event bus URL"):
        open_event_bus("kafka://x", tmp_path)


class FlakyBus:
    """An in-process bus that fails while ``down`` (the network cases use real servers)."""

    def __init__(self) -> None:
        self.down = False
        self.logged: dict[str, AnyEvent] = {}

    async def publish(self, events: list[AnyEvent]) -> int:
        if self.down:
            raise ConnectionError("bus down")
        new = [e for e in events if message_id(e) not in self.logged]
        self.logged.update((message_id(e), e) for e in new)
        return len(new)


async def test_durable_publisher_spools_while_the_bus_is_down_and_catches_up(
    tmp_path: Path,
) -> None:
    bus = FlakyBus()
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = DurablePublisher(bus, spool, max_spooled=3_000, batch=400, retry_s=0.01)  # type: ignore[arg-type]
    events = synthetic_events(2_500, users=50)
    await publisher.publish(events[:500])  # returns once the bus has them
    assert len(bus.logged) == 500 and publisher.buffered == 0 and publisher.healthy
    bus.down = True
    for start in range(500, 2_500, 250):  # acknowledged: each chunk is in the spool
        await publisher.publish(events[start : start + 250])
    assert not publisher.healthy and publisher.buffered == 2_000 == spool.count_sync()
    with pytest.raises(TimeoutError):
        await publisher.flush(timeout=0.2)
    with pytest.raises(BufferFull):  # the spool is full: refused, not dropped
        await publisher.publish(synthetic_events(1_001, users=5, seed=2))
    bus.down = False
    await publisher.flush(timeout=10)
    assert publisher.healthy and publisher.buffered == 0 == spool.count_sync()
    assert [e.event_id for e in bus.logged.values()] == [e.event_id for e in events]  # in order
    await publisher.close()


async def test_a_spool_left_by_a_crash_is_sent_by_the_next_run(tmp_path: Path) -> None:
    events = synthetic_events(300, users=7, seed=3)
    Spool(tmp_path / "spool.sqlite").append_sync(events)  # acknowledged, then the process died
    bus = FlakyBus()
    publisher = DurablePublisher(bus, Spool(tmp_path / "spool.sqlite"))  # type: ignore[arg-type]
    assert publisher.buffered == 300
    publisher.start()
    await publisher.flush(timeout=10)
    assert [e.event_id for e in bus.logged.values()] == [e.event_id for e in events]
    await publisher.close()


def test_the_spool_forgets_users_erased_elsewhere(tmp_path: Path) -> None:
    from trimtab.privacy import erasure_token

    spool = Spool(tmp_path / "spool.sqlite")
    spool.append_sync(synthetic_events(200, users=4, seed=5))
    victim = spool.read_sync(1)[0][1].user_id
    theirs = sum(1 for _, e in spool.read_sync(1000) if e.user_id == victim)
    assert spool.erase_tokens({erasure_token(victim)}) == theirs > 0
    assert all(e.user_id != victim for _, e in spool.read_sync(1000))
    spool.compact_sync()
    assert victim.encode() not in (tmp_path / "spool.sqlite").read_bytes()
    spool.close_sync()
