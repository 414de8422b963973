"""The event log on Redis Streams, partitioned by user.

Events go to ``partitions`` streams ``<prefix>:events:{<p>}`` with ``p = crc32(user) % N``, so
one user's events stay in one stream, in publish order. Each stream entry holds the event as
JSON in the field ``e``.

Publishing runs one Lua script per partition and batch: for each event it sets a
``<prefix>:events:{<p>}:id:<message id>`` marker (:func:`~trimtab.bus.message_id`: user and
``event_id``, hashed) with ``SET NX EX`` and appends only when the marker was new, so a retried
publish (a lost reply, a reconnect, a spool replayed after a crash) never appends twice within
``dedupe_ttl_s``. Marker and stream share the ``{<p>}`` hash tag: one slot, Cluster-ready.

Durability is the server's: with ``appendonly yes`` and ``appendfsync always`` Redis fsyncs
each write before it replies, so an acknowledged event survives a crash of Redis and of its
machine; with ``everysec`` up to a second of acknowledged events can be lost, and without AOF
everything since the last snapshot. :meth:`RedisStreamBus.durability` reads the setting.

Consumers read with consumer groups (``XREADGROUP``) and acknowledge with ``XACK``. A consumer
first re-reads its own pending entries (it restarted after a crash), then new ones; every
``claim_idle_ms`` it also takes over entries another consumer left pending that long
(``XAUTOCLAIM``: that consumer died). Delivery is at least once; the feature processor's
per-user event-id window makes a redelivery a no-op.

Order: a consumer sees each stream in order, so one user's events arrive in order as long as
one consumer (restarted under the same name) reads the group. Entries claimed from a dead
consumer arrive after newer entries the claimer already read.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from trimtab.extras import missing

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError
except ModuleNotFoundError as exc:
    raise missing(exc, "scale", "the Redis backends") from None

from trimtab.bus import BusMessage, default_consumer, message_id, partition_of
from trimtab.events import AnyEvent, decode_one
from trimtab.redisreply import live_entries, settings
from trimtab.store.redis import rewrite_aof

if TYPE_CHECKING:
    from redis.typing import KeyT, StreamIdT

_encoder = msgspec.json.Encoder()

# KEYS[1] = stream, KEYS[2..] = one dedupe marker per event;
# ARGV[1] = marker TTL (s), ARGV[2] = MAXLEN ("" = unbounded), ARGV[3..] = encoded events.
_PUBLISH = """
local added = 0
local ttl = ARGV[1]
local maxlen = ARGV[2]
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    if maxlen == '' then
      redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i + 1])
    end
    added = added + 1
  end
end
return added
"""


def _by_partition(ids: list[str]) -> dict[int, list[str]]:
    """Delivered message ids (``<partition>:<entry id>``) grouped by partition."""
    by_partition: dict[int, list[str]] = {}
    for delivered in ids:
        p, _, entry = delivered.partition(":")
        by_partition.setdefault(int(p), []).append(entry)
    return by_partition


class RedisStreamBus:
    """:class:`~trimtab.bus.EventBus` on Redis Streams with consumer groups.

    ``claim_idle_ms`` is how long an entry may stay unacknowledged with another consumer
    before this one claims it; ``block_ms`` how long one read waits for new entries.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "tt",
        partitions: int = 16,
        dedupe_ttl_s: int = 3600,
        claim_idle_ms: int = 30_000,
        block_ms: int = 1000,
        maxlen: int | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.dedupe_ttl_s = dedupe_ttl_s
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.maxlen = maxlen
        self.streams = [f"{prefix}:events:{{{p}}}" for p in range(partitions)]
        self._publish = client.register_script(_PUBLISH)
        self._groups: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStreamBus:
        return cls(aioredis.from_url(url, decode_responses=False), **options)

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, events: list[AnyEvent]) -> int:
        """Append events (deduplicated by ``event_id``); returns how many were new."""
        if not events:
            return 0
        by_partition: dict[int, tuple[list[str], list[Any]]] = {}
        n = self.partitions
        for e in events:
            p = zlib.crc32(e.user_id.encode()) % n
            slot = by_partition.get(p)
            if slot is None:
                slot = by_partition[p] = ([self.streams[p]], [self.dedupe_ttl_s, self.maxlen or ""])
            slot[0].append(f"{self.streams[p]}:id:{message_id(e)}")
            slot[1].append(_encoder.encode(e))
        pipe = self.client.pipeline(transaction=False)
        for keys, args in by_partition.values():
            await self._publish(keys=keys, args=args, client=pipe)
        return sum(await pipe.execute())

    # -- consuming -----------------------------------------------------------------------
    async def ensure_group(self, group: str) -> None:
        """Create the consumer group on every partition (reading from the start of the log)."""
        if group in self._groups:
            return
        for stream in self.streams:
            try:
                await self.client.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups.add(group)

    async def subscribe(
        self, group: str, batch: int = 500, consumer: str | None = None
    ) -> AsyncGenerator[list[BusMessage], None]:
        """Batches for ``consumer`` of ``group``: its own pending entries first, then new ones.

        Batches hold at most ``batch`` messages each, in stream order per partition.
        """
        consumer = consumer or default_consumer()
        await self.ensure_group(group)
        # 1. What this consumer read before a crash and never acknowledged.
        cursors: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams, "0")
        while cursors:
            reply = await self.client.xreadgroup(group, consumer, cursors, count=batch)
            messages, done = self._messages(reply, cursors)
            for stream in done:
                cursors.pop(stream, None)
            for start in range(0, len(messages), batch):
                yield messages[start : start + batch]
        # 2. New entries, plus entries other (dead) consumers left pending too long.
        fresh: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams, ">")
        next_claim = time.monotonic() + self.claim_idle_ms / 2000.0
        while True:
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self.claim_idle_ms / 2000.0
                async for messages in self._claim(group, consumer, batch):
                    yield messages
            block = min(self.block_ms, max(1, self.claim_idle_ms // 2))
            reply = await self.client.xreadgroup(group, consumer, fresh, count=batch, block=block)
            messages, _ = self._messages(reply, None)
            for start in range(0, len(messages), batch):
                yield messages[start : start + batch]

    async def _claim(
        self, group: str, consumer: str, batch: int
    ) -> AsyncIterator[list[BusMessage]]:
        for p, stream in enumerate(self.streams):
            cursor: Any = "0-0"
            while True:
                reply = await self.client.xautoclaim(
                    stream, group, consumer, self.claim_idle_ms, cursor, count=batch
                )
                cursor, entries = reply[0], reply[1]
                messages = self._decode(p, entries)
                if messages:
                    yield messages
                if cursor in (b"0-0", "0-0"):
                    break

    def _messages(
        self, reply: Any, cursors: dict[KeyT, StreamIdT] | None
    ) -> tuple[list[BusMessage], list[str]]:
        """Decode an XREADGROUP reply; with ``cursors``, advance them and list finished streams."""
        messages: list[BusMessage] = []
        done: list[str] = []
        seen: set[str] = set()
        for raw_stream, entries in reply or ():
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            seen.add(stream)
            p = int(stream[stream.rindex("{") + 1 : -1])
            messages.extend(self._decode(p, entries))
            if cursors is not None:
                if entries:
                    cursors[stream] = entries[-1][0].decode()
                else:
                    done.append(stream)
        if cursors is not None:
            done.extend(s for s in self.streams if s in cursors and s not in seen)
        return messages, done

    def _decode(self, p: int, entries: Iterable[Any]) -> list[BusMessage]:
        out = []
        for entry_id, fields in entries:
            if not fields:  # deleted (trimmed) while pending: nothing to deliver
                continue
            out.append(BusMessage(f"{p}:{entry_id.decode()}", decode_one(fields[b"e"])))
        return out

    async def ack(self, group: str, ids: list[str]) -> None:
        """Acknowledge delivered messages (ids as in :class:`~trimtab.bus.BusMessage`)."""
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for p, entries in _by_partition(ids).items():
            pipe.xack(self.streams[p], group, *entries)
        await pipe.execute()

    async def delete(self, ids: list[str]) -> int:
        """Delete delivered messages from the log (events of erased users a consumer met)."""
        deleted = 0
        for p, entries in _by_partition(ids).items():
            deleted += await self.client.xdel(self.streams[p], *entries)
        return deleted

    async def compact(self, done: set[str] | None = None) -> bool:
        """After erasures: have Redis rewrite its AOF, dropping the erased entries' writes.

        ``XDEL`` only marks an entry deleted inside its stream node: its bytes stay in Redis's
        memory and in RDB snapshots until the whole node (up to 100 entries) is deleted or
        trimmed. A rewrite without the RDB preamble (``aof-use-rdb-preamble no``) writes live
        entries only. See ``docs/reliability.md``.
        """
        return await rewrite_aof(self.client, done)

    async def durability(self) -> str:
        """What an acknowledged write survives, from the server's AOF settings."""
        try:
            config = await self.client.config_get("append*")
        except Exception:  # CONFIG may be disabled (managed Redis): say so
            return "unknown (CONFIG GET not allowed)"
        get = settings(config)
        if get.get("appendonly") != "yes":
            return "memory only: Redis runs without AOF (appendonly no)"
        if get.get("appendfsync") == "always":
            return "fsync per write (appendfsync always)"
        return f"AOF, fsync {get.get('appendfsync')}: a Redis crash may lose the last second"

    # -- inspection ----------------------------------------------------------------------
    async def count(self) -> int:
        """How many events the log holds."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xlen(stream)
        return sum(await pipe.execute())

    async def iter_all(self, batch: int = 10_000) -> AsyncIterator[AnyEvent]:
        """Every logged event, partition by partition, each in log order."""
        for stream in self.streams:
            start = "-"
            while True:
                entries = live_entries(await self.client.xrange(stream, start, "+", count=batch))
                for _, fields in entries:
                    yield decode_one(fields[b"e"])
                if len(entries) < batch:
                    break
                start = "(" + entries[-1][0].decode()

    async def erase_user(self, user_id: str, batch: int = 1000) -> int:
        """Delete every logged event of one user (erasure); returns how many were deleted.

        Only the user's own partition can hold them, so only that stream is scanned.
        """
        stream = self.streams[partition_of(user_id, self.partitions)]
        deleted, start = 0, "-"
        while True:
            entries = live_entries(
                await self.client.xrange(stream, min=start, max="+", count=batch)
            )
            if not entries:
                return deleted
            doomed = [
                entry_id
                for entry_id, fields in entries
                if fields and decode_one(fields[b"e"]).user_id == user_id
            ]
            if doomed:
                deleted += await self.client.xdel(stream, *doomed)
            if len(entries) < batch:
                return deleted
            start = "(" + entries[-1][0].decode()

    async def pending(self, group: str) -> int:
        """Entries the group has not acknowledged yet: undelivered (lag) or in flight."""
        total = 0
        name = group.encode()
        for stream in self.streams:
            try:
                groups = await self.client.xinfo_groups(stream)
            except ResponseError:  # no such stream yet
                continue
            for info in groups:
                if info["name"] == name:
                    # Not Redis's "lag": after XDEL it is missing or wrong (7.0). Count.
                    lag = await self._after(stream, info["last-delivered-id"])
                    total += info["pending"] + lag
        return total

    async def _after(self, stream: str, last: bytes | str) -> int:
        """How many entries a stream holds after ``last``."""
        start = last.decode() if isinstance(last, bytes) else last
        count = 0
        while True:
            entries = live_entries(await self.client.xrange(stream, f"({start}", "+", count=10_000))
            count += len(entries)
            if len(entries) < 10_000:
                return count
            start = entries[-1][0].decode()

    async def drop(self) -> None:
        """Delete the streams and dedupe markers of this prefix (tests, teardown)."""
        keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}:events:*")]
        for start in range(0, len(keys), 1000):
            await self.client.unlink(*keys[start : start + 1000])
        self._groups.clear()

    async def close(self) -> None:
        await self.client.aclose()
