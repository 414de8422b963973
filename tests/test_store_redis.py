"""trimtab.store.redis: versioned per-user state on the real Redis server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from trimtab.features import FeatureProcessor, FeatureSpec, decode_state, encode_state
from trimtab.sim.synthetic import synthetic_events
from trimtab.store import StateStore
from trimtab.store.redis import RedisStateStore


@pytest.fixture
async def store(redis_url: str, namespace: str) -> AsyncIterator[RedisStateStore]:
    s = RedisStateStore.from_url(redis_url, prefix=namespace)
    yield s
    async for user_id in s.user_ids():
        await s.delete(user_id)
    await s.close()


def states(n_users: int) -> dict[str, bytes]:
    fp = FeatureProcessor([FeatureSpec("depth", "scroll_depth_max", scope="user")])
    fp.apply(synthetic_events(20 * n_users, users=n_users, seed=2))
    return {u: encode_state(s) for u, s in fp.states.items()}


async def test_is_a_state_store(store: RedisStateStore) -> None:
    assert isinstance(store, StateStore)


async def test_round_trip_of_many_users(store: RedisStateStore) -> None:
    blobs = states(200)
    assert await store.put_many(blobs) == set()
    loaded = await store.get_many([*blobs, "nobody"])
    assert loaded == blobs
    assert {u async for u in store.user_ids()} == set(blobs)
    user = next(iter(blobs))
    assert decode_state(loaded[user]).user_id == user


async def test_every_write_bumps_the_version(store: RedisStateStore) -> None:
    versions, conflicts = await store.put_many_versioned({"a": b"1", "b": b"1"})
    assert versions == {"a": 1, "b": 1} and not conflicts
    versions, _ = await store.put_many_versioned({"a": b"2"}, {"a": 1})
    assert versions == {"a": 2}
    assert await store.get_many_versioned(["a", "b"]) == {"a": (b"2", 2), "b": (b"1", 1)}


async def test_stale_writer_is_refused(store: RedisStateStore) -> None:
    await store.put_many({"a": b"first"})
    assert await store.put_many({"a": b"newer", "b": b"new"}, {"a": 1, "b": 0}) == set()
    # A writer still holding version 1 of "a" (and thinking "b" is new) loses both.
    assert await store.put_many({"a": b"stale", "b": b"stale"}, {"a": 1, "b": 0}) == {"a", "b"}
    assert await store.get_many(["a", "b"]) == {"a": b"newer", "b": b"new"}


async def test_erase_leaves_a_tombstone_no_writer_gets_past(store: RedisStateStore) -> None:
    await store.put_many({"a": b"x", "b": b"y"})
    versions = await store.get_many_versioned(["a"])
    assert await store.erase("a") is True
    assert await store.erased(["a", "b"]) == {"a"}
    # A writer that loaded "a" before the erasure, one that thinks it is new, and an
    # unconditional one: all refused, and told so.
    erased: set[str] = set()
    for expected in ({"a": versions["a"][1]}, {"a": 0}, None):
        written, conflicts = await store.put_many_versioned({"a": b"back"}, expected, erased)
        assert written == {} and conflicts == set() and erased == {"a"}
    found: set[str] = set()
    assert await store.get_many_versioned(["a", "b"], found) == {"b": (b"y", 1)}
    assert found == {"a"}


async def test_delete_erases_one_user(store: RedisStateStore) -> None:
    await store.put_many({"a": b"x", "b": b"y"})
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.get_many(["a", "b"]) == {"b": b"y"}
    # After erasure the user starts again from version 0.
    assert await store.put_many({"a": b"z"}, {"a": 0}) == set()


@pytest.mark.parametrize("user", ["u1", "user:with:colons", "üñí", "{braces}", "a/b"])
async def test_one_user_one_slot(store: RedisStateStore, user: str) -> None:
    key, tombstone = store.key(user), store.tombstone_key(user)
    assert key.startswith(f"{store.prefix}:{{")
    assert key_slot(key.encode()) == key_slot(tombstone.encode())  # one script, one slot
    assert user not in key and user not in tombstone  # key names never carry the id
    await store.put_many({user: b"blob"})
    assert await store.get_many([user]) == {user: b"blob"}
    assert [u async for u in store.user_ids()] == [user]
