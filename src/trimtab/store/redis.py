"""The scaled state store: one Redis hash per user, versioned, written with compare-and-set.

Key layout (Cluster-ready): ``<prefix>:{<user>}:state`` is a hash with the fields ``b`` (the
encoded :class:`~trimtab.features.UserState`) and ``v`` (a version counter bumped by every
write). The ``{<user>}`` hash tag puts everything of one user on one slot, so the
compare-and-set script touches a single slot and works unchanged on Redis Cluster.

Several feature processors may write the same user (a rebalance, a claimed backlog). A writer
passes the version it loaded; if the stored version moved on meanwhile, the write is refused
and the user is reported as conflicted, so the caller reloads and re-applies instead of
overwriting newer state with a stale one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import redis.asyncio as aioredis

# KEYS[1] = state key; ARGV[1] = expected version ("" = unconditional), ARGV[2] = blob.
# Returns the new version, or -1 - current version when the expectation failed.
_CAS = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= v then
  return -1 - v
end
v = v + 1
redis.call('HSET', KEYS[1], 'b', ARGV[2], 'v', v)
return v
"""


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

    @classmethod
    def from_url(cls, url: str, prefix: str = "tt") -> RedisStateStore:
        return cls(aioredis.from_url(url, decode_responses=False), prefix)

    def key(self, user_id: str) -> str:
        return f"{self.prefix}:{{{user_id}}}:state"

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored blobs of these users (absent users are missing from the result)."""
        return {u: blob for u, (blob, _) in (await self.get_many_versioned(user_ids)).items()}

    async def get_many_versioned(self, user_ids: Iterable[str]) -> dict[str, tuple[bytes, int]]:
        """Blob and version of each stored user, in one pipelined round trip."""
        ids = list(user_ids)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for user_id in ids:
            pipe.hmget(self.key(user_id), "b", "v")
        rows = await pipe.execute()
        return {
            user_id: (blob, int(version))
            for user_id, (blob, version) in zip(ids, rows, strict=True)
            if blob is not None
        }

    async def put_many(
        self, blobs: Mapping[str, bytes], expected: Mapping[str, int] | None = None
    ) -> set[str]:
        """Store blobs; return the users whose stored version differed from ``expected``.

        Users absent from ``expected`` (or all users, when it is None) are written
        unconditionally; expected version 0 means "must not exist yet".
        """
        _, conflicts = await self.put_many_versioned(blobs, expected)
        return conflicts

    async def put_many_versioned(
        self, blobs: Mapping[str, bytes], expected: Mapping[str, int] | None = None
    ) -> tuple[dict[str, int], set[str]]:
        """Like :meth:`put_many`, also returning the new version of every user written."""
        if not blobs:
            return {}, set()
        expected = expected or {}
        pipe = self.client.pipeline(transaction=False)
        users = list(blobs)
        for user_id in users:
            want = expected.get(user_id)
            await self._cas(
                keys=[self.key(user_id)],
                args=["" if want is None else want, blobs[user_id]],
                client=pipe,
            )
        results = await pipe.execute()
        versions: dict[str, int] = {}
        conflicts: set[str] = set()
        for user_id, result in zip(users, results, strict=True):
            if result < 0:
                conflicts.add(user_id)
            else:
                versions[user_id] = result
        return versions, conflicts

    async def delete(self, user_id: str) -> bool:
        """Erase one user's state; True if there was any."""
        return bool(await self.client.delete(self.key(user_id)))

    async def user_ids(self) -> AsyncIterator[str]:
        """Every stored user (SCAN, so it does not block the server)."""
        head, tail = len(self.prefix) + 2, -len("}:state")
        async for key in self.client.scan_iter(match=f"{self.prefix}:{{*}}:state", count=1000):
            yield key.decode()[head:tail]

    async def close(self) -> None:
        await self.client.aclose()
