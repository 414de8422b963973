"""Erasure under load leaves nothing, and nothing comes back (issue 11, items 4 and 9).

Users are erased while a tracker-like load keeps sending their events and asking for their
decisions (the late events and flushes that used to bring them back). Afterwards every file
of every store (SQLite files and their write-ahead logs; the spool, Redis's AOF and NATS's
stream files when scaled) is grepped byte for byte for each erased id, and the users are read
back through the admin routes after a restart.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import pytest
from abuse_harness import Load, Server, grep_bytes, pseudonym, site_config, wait_for

VICTIMS = 100
KEEPERS = 20


def _resurrected(server: Server, users: list[str]) -> list[str]:
    """Users the server still knows anything about (features, decisions)."""
    back = []
    for user in users:
        features = server.features(user)
        path = "/v1/admin/decisions?" + urlencode({"user_id": user})
        decisions = server.request("GET", path, admin=True)[2]
        if "scroll_depth_max" in features or "visible_ms_by_category" in features or decisions:
            back.append(user)
    return back


def test_embedded_erasure_under_load_leaves_no_byte_and_nothing_comes_back(tmp_path):
    config = site_config(tmp_path)
    data = tmp_path / "data"
    server = Server(config, data).start()
    victims = [f"victim-{i}" for i in range(VICTIMS)]
    keepers = [f"keeper-{i}" for i in range(KEEPERS)]
    load = Load(lambda: server, victims + keepers, threads=3, batch=10, decide_every=2)
    try:
        load.start()
        assert wait_for(lambda: load.acked_count() > 3000, 60)
        for user in victims:  # while the load goes on, their events included
            status, body = server.erase(user)
            assert status == 200, body
        time.sleep(1.0)  # late events and flushes after the last erasure
        load.stop()
        assert wait_for(lambda: server.health()["decisions_pending"] == 0, 10)
        assert _resurrected(server, victims) == []
        # the files are rewritten about a second after the last erasure, while serving
        assert wait_for(lambda: not server.health()["erasure_compaction_pending"], 30)
        found = grep_bytes([data], [pseudonym(u) for u in victims])
        server.stop()  # the final flush must not bring anyone back either
        found.update(grep_bytes([data], [pseudonym(u) for u in victims]))
        kept = grep_bytes([data], [pseudonym(u) for u in keepers])
        server.start()
        assert _resurrected(server, victims) == []
        assert _resurrected(server, keepers) == keepers  # the others are all still there
    finally:
        load.stop()
        server.kill()
    files = sorted(p.name for p in data.iterdir())
    print(f"\nembedded: {VICTIMS} users erased under load, {load.acked_count()} events acked, "
          f"0 resurrected, {len(found)} ids found in {files}")  # fmt: skip
    assert found == {}, found
    assert len(kept) == KEEPERS  # the grep does find ids that are there


def test_any_user_id_is_erasable(tmp_path):
    """Ids with "/" (raw or %2F-encoded), "%", spaces and non-ASCII reach the erase route."""
    config = site_config(tmp_path)
    server = Server(config, tmp_path / "data").start()
    odd = ["a/b", "a/../b", "50%", "with space", "ünï/cødé", "/leading", "trailing/"]
    try:
        for user in odd:
            from abuse_harness import events_for

            assert server.post_events(events_for(user, 4))[0] == 200
            assert "scroll_depth_max" in server.features(user)
        for user in odd:
            status, body = server.erase(user)
            assert status == 200, (user, body)
            assert body["erased"] == pseudonym(user) and body["events"] == 4, body
            assert "scroll_depth_max" not in server.features(user)
    finally:
        server.kill()


@pytest.mark.parametrize("route", ["/v1/users/a/b", "/v1/users/a%2Fb"])
def test_a_slash_in_the_path_is_part_of_the_id(tmp_path, route):
    from abuse_harness import events_for

    server = Server(site_config(tmp_path), tmp_path / "data").start()
    try:
        assert server.post_events(events_for("a/b", 3))[0] == 200
        status, _, body = server.request("DELETE", route, admin=True)
        assert status == 200 and body["erased"] == pseudonym("a/b") and body["events"] == 3
    finally:
        server.kill()


def _aof_rewritten(port: int) -> bool:
    """No AOF rewrite running or scheduled on our own Redis."""
    import redis

    client = redis.Redis(port=port)
    try:
        info = client.info("persistence")
    finally:
        client.close()
    return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]


@pytest.mark.redis
@pytest.mark.parametrize(
    ("bus", "n_victims"),
    [
        ("redis", 20),
        pytest.param("redis", VICTIMS, marks=pytest.mark.slow),
        pytest.param("nats", VICTIMS, marks=[pytest.mark.slow, pytest.mark.nats]),
    ],
)
def test_scaled_erasure_under_load_reaches_every_process_and_store(
    tmp_path, bus, n_victims, own_server
):
    """Two processes (one restarted, so an earlier lifetime's decision log is on disk), load
    on both, erasure through one: no state, event, decision or spooled byte is left anywhere,
    and no edge, consumer or late event brings a user back."""
    from abuse_harness import clean_env

    from trimtab.backends import open_event_bus, open_state_store

    redis_server = own_server("redis")
    state_url = f"{redis_server.url}?prefix=er"
    if bus == "redis":
        bus_url = f"{redis_server.url}?prefix=er"
        stores = [redis_server.workdir]
    else:
        # Debian's 2.9: the wheel's 2.15 erases a message in ~10 ms (2.9: ~1.4 ms), too slow for
        # 100 users under load within the test's budget (docs/reliability.md)
        nats_server = own_server("nats", debian_nats=True)
        bus_url = f"{nats_server.url}?stream=ER&prefix=er"
        stores = [redis_server.workdir, nats_server.workdir]
    env = clean_env(TRIMTAB_STATE=state_url, TRIMTAB_BUS=bus_url)
    config = site_config(tmp_path)
    a = Server(config, tmp_path / "a", env).start()
    b = Server(config, tmp_path / "b", env).start()
    victims = [f"victim-{i}" for i in range(n_victims)]
    keepers = [f"keeper-{i}" for i in range(KEEPERS)]
    turn = iter(range(10**9))
    load = Load(lambda: (a, b)[next(turn) % 2], victims + keepers, threads=3, batch=10,
                decide_every=2)  # fmt: skip
    try:
        load.start()
        assert wait_for(lambda: load.acked_count() > 1500, 60)
        a.stop()  # a new lifetime: a new decision log beside the old one
        a.start()
        assert wait_for(lambda: load.acked_count() > 3000, 60)
        for user in victims:
            status, body = a.erase(user)
            assert status == 200, body
        time.sleep(1.0)
        load.stop()

        async def settled() -> bool:
            log = open_event_bus(bus_url, tmp_path)
            try:
                return await log.pending("features") == 0
            finally:
                await log.close()

        assert wait_for(lambda: asyncio.run(settled()), 90)
        time.sleep(4.0)  # the consumers' grace period: every batch they held is applied
        for server in (a, b):
            assert wait_for(lambda s=server: not s.health()["erasure_compaction_pending"], 30)
            assert _resurrected(server, victims) == []

        async def stored(users: list[str]) -> tuple[dict, set]:
            store = open_state_store(state_url, tmp_path)
            try:
                ids = [pseudonym(u) for u in users]
                return await store.get_many(ids), await store.erased(ids)
            finally:
                await store.close()

        states, tombstoned = asyncio.run(stored(victims))
        assert states == {} and len(tombstoned) == n_victims
        assert len(asyncio.run(stored(keepers))[0]) == KEEPERS
        a.stop()
        b.stop()
        logs = sorted(p.name for p in (tmp_path / "a").glob("decisions*.sqlite"))
        assert len(logs) == 2, logs  # both lifetimes of a
        assert wait_for(lambda: _aof_rewritten(redis_server.port), 30)
        roots = [tmp_path / "a", tmp_path / "b", *stores]
        found = grep_bytes(roots, [pseudonym(u) for u in victims])
        kept = grep_bytes(roots, [pseudonym(u) for u in keepers])
    finally:
        load.stop()
        a.kill()
        b.kill()
    print(f"\nscaled ({bus}): {n_victims} users erased under load on 2 processes, "
          f"{load.acked_count()} events acked, 0 resurrected, {len(found)} ids found")  # fmt: skip
    assert found == {}, found
    assert len(kept) == KEEPERS
