"""Scaled mode never acknowledges before the bus (issue 11, item 2).

A 2xx means the bus confirmed the events or they are committed to the process's local spool
(fsynced), which is sent to the bus when it is back, by the same process or, after a crash,
by the next one. When neither is possible the answer is 503 with Retry-After.
"""

from __future__ import annotations

import signal

import pytest
from abuse_harness import (
    Server,
    bus_event_ids,
    clean_env,
    events_for,
    site_config,
    tally,
    wait_for,
)

pytestmark = [pytest.mark.redis]


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_acked_during_an_outage_survive_a_crash_of_the_process(
    tmp_path, kind, own_server, redis_url, namespace
):
    """Bus down, events acknowledged into the spool until it is full (then 503), the process
    killed with SIGKILL, the bus back, the process restarted: every acknowledged event is in
    the log, once."""
    bus_server = own_server(kind)
    if kind == "redis":
        bus_url = f"{bus_server.url}?prefix={namespace}"
    else:
        bus_url = f"{bus_server.url}?stream={namespace.upper()}&prefix={namespace}"
    env = clean_env(TRIMTAB_STATE=f"{redis_url}?prefix={namespace}", TRIMTAB_BUS=bus_url)
    config = site_config(tmp_path, max_spooled_events=100)
    server = Server(config, tmp_path / "data", env).start()
    acked: list[str] = []
    try:
        for n in range(3):
            batch = events_for(f"u{n}", 20)
            assert server.post_events(batch)[0] == 200
            acked += [e.event_id for e in batch]
        bus_server.stop(signal.SIGKILL)
        for n in range(5):  # 100 events: exactly what the spool may hold
            batch = events_for(f"u{n}", 20)
            status, _, body = server.post_events(batch, timeout=30)
            assert status == 200, body
            acked += [e.event_id for e in batch]
        status, headers, body = server.post_events(events_for("u9", 20), timeout=30)
        assert status == 503, body  # refused, not acknowledged and dropped
        assert int(headers["retry-after"]) > 0
        health = server.health()
        assert health["status"] == "degraded" and health["buffered"] == 100
        assert any("event bus unreachable, 100 events spooled" in r for r in health["degraded"])
        server.kill()  # SIGKILL with 100 acknowledged events only in the spool
        bus_server.start()
        server.start()
        assert wait_for(lambda: server.health()["buffered"] == 0, 60), server.health()
        assert server.health()["status"] == "ok"
    finally:
        server.kill()
    counts = tally(acked, bus_event_ids(bus_url, tmp_path))
    assert (counts.acked, counts.lost, counts.doubled) == (160, 0, 0), counts


def test_an_event_id_reused_by_another_user_is_logged_for_both_embedded(tmp_path):
    server = Server(site_config(tmp_path), tmp_path / "data").start()
    try:
        first, second = events_for("alice", 1), events_for("bob", 1)
        second[0].event_id = first[0].event_id
        for batch in (first, second, first):  # the last: a true retry, logged once
            status, _, body = server.post_events(batch)
            assert status == 200 and body["accepted"] == 1
        assert server.features("bob")["scroll_velocity"] == 100.0  # applied for bob too
    finally:
        server.kill()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "events.sqlite")
    rows = conn.execute("SELECT user_id FROM events WHERE event_id = ?", (first[0].event_id,))
    assert len({r[0] for r in rows}) == 2  # alice's and bob's, once each
    conn.close()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_an_event_id_reused_by_another_user_is_logged_for_both_on_the_bus(
    kind, redis_url, nats_url, namespace, tmp_path
):
    from trimtab.backends import open_event_bus

    url = (
        f"{redis_url}?prefix={namespace}"
        if kind == "redis"
        else f"{nats_url}?stream={namespace.upper()}&prefix={namespace}"
    )
    bus = open_event_bus(url, tmp_path)
    try:
        first, second = events_for("alice", 1), events_for("bob", 1)
        second[0].event_id = first[0].event_id
        assert await bus.publish(first) == 1
        assert await bus.publish(second) == 1  # another user's event: new
        assert await bus.publish(first) == 0  # a retry: dropped
        logged = [(e.user_id, e.event_id) async for e in bus.iter_all()]
        assert sorted(logged) == [("alice", first[0].event_id), ("bob", first[0].event_id)]
    finally:
        await bus.drop()
        await bus.close()
