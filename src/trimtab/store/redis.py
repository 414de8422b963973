"""The scaled state store: one Redis hash per user, versioned, written with compare-and-set.

Key layout (Cluster-ready): ``<prefix>:{<t>}:state`` is a hash with the fields ``b`` (the
encoded :class:`~trimtab.features.UserState`), ``v`` (a version counter bumped by every
write) and ``u`` (the user id); ``t`` is the user's :func:`~trimtab.privacy.erasure_token`.
The ``{<t>}`` hash tag puts everything of one user on one slot, so the compare-and-set script
touches a single slot and works unchanged on Redis Cluster.

Erasure deletes the state and sets the tombstone ``<prefix>:{<t>}:erased`` in one script; the
compare-and-set refuses to write a tombstoned user, so no processor holding the user from
before the erasure can write them back. Key names carry the token, never the id, so nothing
of an erased user is left in Redis (or its AOF, once rewritten) but the token.

Several feature processors may write the same user (a rebalance, a claimed backlog). A writer
passes the version it loaded; if the stored version moved on meanwhile, the write is refused
and the user is reported as conflicted, so the caller reloads and re-applies instead of
overwriting newer state with a stale one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping

from trimtab.extras import missing

try:
    import redis.asyncio as aioredis
except ModuleNotFoundError as exc:
    raise missing(exc, "scale", "the Redis backends") from None

from trimtab.privacy import erasure_token
from trimtab.redisreply import live_entries, settings, text

# KEYS[1] = state key, KEYS[2] = tombstone; ARGV[1] = expected version ("" = unconditional),
# ARGV[2] = blob, ARGV[3] = user id. Returns the new version, -1 - current version when the
# expectation failed, or nil (false) when the user was erased.
_CAS = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= v then
  return -1 - v
end
v = v + 1
redis.call('HSET', KEYS[1], 'b', ARGV[2], 'v', v, 'u', ARGV[3])
return v
"""

# KEYS[1] = state key, KEYS[2] = tombstone; ARGV[1] = erasure time (ms). Returns 1 if a
# state was deleted.
_ERASE = """
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


async def rewrite_aof(client: aioredis.Redis, done: set[str] | None = None) -> bool:
    """Ask Redis to rewrite its append-only file (after erasures: the old file still holds the
    erased writes). False when it cannot now (a rewrite is running: it may have started before
    the erasure, so try again later); True when started or when the server keeps no AOF.

    ``done`` holds the run ids of servers already asked in this round (state and bus may be
    one server).
    """
    try:
        run_id = str((await client.info("server")).get("run_id"))
        config = await client.config_get("appendonly")
    except Exception:  # CONFIG disabled (managed Redis): the operator's job, see the docs
        return True
    if done is not None and run_id in done:
        return True
    if settings(config).get("appendonly") != "yes":
        return True
    try:
        await client.bgrewriteaof()
    except Exception:  # already rewriting: try again later
        return False
    if done is not None:
        done.add(run_id)
    return True


class RedisStateStore:
    """User state blobs in Redis, one versioned hash per user.

    ``client`` is a ``redis.asyncio.Redis`` created with ``decode_responses=False``.
    Writes go out in one pipeline per call; the compare-and-set is a Lua script per user
    (cheap: one round trip for the whole batch).
    """

    def __init__(self, client: aioredis.Redis, prefix: str = "tt") -> None:
        self.client = client
        self.prefix = prefix
        self._cas = client.register_script(_CAS)
        self._erase = client.register_script(_ERASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "tt") -> RedisStateStore:
        return cls(aioredis.from_url(url, decode_responses=False), prefix)

    def key(self, user_id: str) -> str:
        return f"{self.prefix}:{{{erasure_token(user_id)}}}:state"

    def tombstone_key(self, user_id: str) -> str:
        return f"{self.prefix}:{{{erasure_token(user_id)}}}:erased"

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored blobs of these users (absent users are missing from the result)."""
        return {u: blob for u, (blob, _) in (await self.get_many_versioned(user_ids)).items()}

    async def get_many_versioned(
        self, user_ids: Iterable[str], erased: set[str] | None = None
    ) -> dict[str, tuple[bytes, int]]:
        """Blob and version of each stored user, in one pipelined round trip.

        With ``erased``, tombstoned users among ``user_ids`` are added to it (same round trip).
        """
        ids = list(user_ids)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for user_id in ids:
            pipe.hmget(self.key(user_id), "b", "v")
            if erased is not None:
                pipe.exists(self.tombstone_key(user_id))
        rows = await pipe.execute()
        step = 1 if erased is None else 2
        out = {}
        for i, user_id in enumerate(ids):
            blob, version = rows[i * step]
            if blob is not None:
                out[user_id] = (blob, int(version))
            if erased is not None and rows[i * step + 1]:
                erased.add(user_id)
        return out

    async def erased(self, user_ids: Iterable[str]) -> set[str]:
        """Those of these users that have a tombstone."""
        ids = list(user_ids)
        if not ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for user_id in ids:
            pipe.exists(self.tombstone_key(user_id))
        return {u for u, hit in zip(ids, await pipe.execute(), strict=True) if hit}

    async def put_many(
        self, blobs: Mapping[str, bytes], expected: Mapping[str, int] | None = None
    ) -> set[str]:
        """Store blobs; return the users whose stored version differed from ``expected``.

        Users absent from ``expected`` (or all users, when it is None) are written
        unconditionally; expected version 0 means "must not exist yet". Erased users are
        never written.
        """
        _, conflicts = await self.put_many_versioned(blobs, expected)
        return conflicts

    async def put_many_versioned(
        self,
        blobs: Mapping[str, bytes],
        expected: Mapping[str, int] | None = None,
        erased: set[str] | None = None,
    ) -> tuple[dict[str, int], set[str]]:
        """Like :meth:`put_many`, also returning the new version of every user written.

        Users refused because they were erased are in neither result; with ``erased`` they
        are added to it.
        """
        if not blobs:
            return {}, set()
        expected = expected or {}
        pipe = self.client.pipeline(transaction=False)
        users = list(blobs)
        for user_id in users:
            want = expected.get(user_id)
            await self._cas(
                keys=[self.key(user_id), self.tombstone_key(user_id)],
                args=["" if want is None else want, blobs[user_id], user_id],
                client=pipe,
            )
        results = await pipe.execute()
        versions: dict[str, int] = {}
        conflicts: set[str] = set()
        for user_id, result in zip(users, results, strict=True):
            if result is None:
                if erased is not None:
                    erased.add(user_id)
            elif result < 0:
                conflicts.add(user_id)
            else:
                versions[user_id] = result
        return versions, conflicts

    async def erase(self, user_id: str) -> bool:
        """Delete one user's state and leave a tombstone (atomic); True if there was state."""
        deleted = await self._erase(
            keys=[self.key(user_id), self.tombstone_key(user_id)],
            args=[int(time.time() * 1000)],
        )
        return bool(deleted)

    @property
    def journal_key(self) -> str:
        return f"{self.prefix}:erasures"

    async def announce_erasure(self, user_id: str, max_entries: int = 1_000_000) -> str:
        """Tell every process about an erasure (by token): the ``<prefix>:erasures`` stream."""
        entry = await self.client.xadd(
            self.journal_key,
            {"t": erasure_token(user_id)},
            maxlen=max_entries,
            approximate=True,
        )
        return text(entry)

    async def erasures_after(self, last: str, count: int = 1000) -> list[tuple[str, str]]:
        """Announced erasures after entry ``last`` ("0" for all): (entry id, token) pairs."""
        start = "-" if last in ("", "0") else f"({last}"
        entries = live_entries(await self.client.xrange(self.journal_key, start, "+", count=count))
        return [(entry.decode(), fields[b"t"].decode()) for entry, fields in entries]

    async def compact(self, done: set[str] | None = None) -> bool:
        """After erasures: have Redis rewrite its AOF (see :func:`rewrite_aof`)."""
        return await rewrite_aof(self.client, done)

    async def delete(self, user_id: str) -> bool:
        """Delete one user's state and tombstone (tests, cleanup); True if there was state."""
        return bool(await self.client.delete(self.key(user_id), self.tombstone_key(user_id)))

    async def user_ids(self) -> AsyncIterator[str]:
        """Every stored user (SCAN, so it does not block the server)."""
        async for key in self.client.scan_iter(match=f"{self.prefix}:{{*}}:state", count=1000):
            user = await self.client.hget(key, "u")
            if user is not None:
                yield text(user)

    async def close(self) -> None:
        await self.client.aclose()
