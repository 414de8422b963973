"""The event log on NATS JetStream, partitioned by user.

One stream (``TT_EVENTS`` by default) captures the subjects ``<prefix>.events.<p>`` with
``p = crc32(user) % N`` (the same partitioning as :mod:`trimtab.bus.redis`). Each event is one
message whose ``Nats-Msg-Id`` header is its :func:`~trimtab.bus.message_id` (user and
``event_id``, hashed), so JetStream drops a retried publish inside the stream's duplicate
window (``duplicate_window_s``).

Durability: the stream is stored in files (``replicas`` copies in a cluster) and a publish is
acknowledged once the server has written it, so it survives a crash of the server *process*
(``kill -9``: measured in ``docs/reliability.md``). It survives a crash of the *machine* only
if the server fsyncs before acknowledging: ``jetstream { sync_interval: always }`` (nats-server
2.10 and later); by default it fsyncs every two minutes, and Jepsen (NATS 2.12.1, December 2025)
showed acknowledged writes lost to power failures in that window. A client connection cannot
see that policy: :meth:`NatsJetStreamBus.durability` reads it from the server's monitoring
endpoint when the bus URL names one (``?monitor=http://host:8222``).

A consumer group is a durable pull consumer with explicit acks. A message not acknowledged
within ``ack_wait_s`` is delivered again, to whichever member of the group fetches next: that
is how a dead consumer's batch reaches a live one. ``max_ack_pending`` bounds what the group
holds unacknowledged.

A :class:`~trimtab.bus.BusMessage` id is the message's ack subject, so acknowledging is one
fire-and-forget publish per message and needs no local bookkeeping.

Order across a crash: the messages a dead member held (including any the server pushed into a
pull request it left open, and the rest of a half-sent batch of acks) are redelivered only after
``ack_wait_s``, while anything newer could be delivered at once. So a member that joins while
the group has messages in flight first waits ``ack_wait_s + fetch_timeout_s``; JetStream then
redelivers the expired messages, in stream order, before anything newer. With one active
member per group (the others standing by), one user's events are applied in order across
crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import urllib.request
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec

from trimtab.extras import missing

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import api
except ModuleNotFoundError as exc:
    raise missing(exc, "scale", "the NATS backend") from None

from trimtab.bus import BusMessage, default_consumer, message_id, partition_of
from trimtab.events import AnyEvent, decode_one

log = logging.getLogger("trimtab.bus.nats")
_encoder = msgspec.json.Encoder()
_ACK = b"+ACK"
# JetStream's answers to deleting a message that is no longer there: 10057 "no message found"
# (deleted before the request), 10043 "sequence N not found" (deleted while it was handled)
_GONE = frozenset({10043, 10057})


async def connect(url: str, **options: Any) -> Client:
    """A NATS connection that keeps reconnecting (a restarted server is picked up again)."""

    async def quiet(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.25)
    options.setdefault("connect_timeout", 2)
    return await nats.connect(url, error_cb=quiet, **options)


def _read_varz(monitor: str) -> dict[str, Any]:
    with urllib.request.urlopen(monitor.rstrip("/") + "/varz", timeout=1.5) as answer:
        varz: dict[str, Any] = json.loads(answer.read())
    return varz


def sync_policy(varz: dict[str, Any], stored: str) -> str:
    """The durability of an acknowledged write, from a server's ``/varz`` answer.

    >>> sync_policy({"jetstream": {"config": {"sync_always": True}}}, "file storage")[:44]
    'fsync per write (jetstream sync_interval: al'
    >>> sync_policy({"version": "2.9.10", "jetstream": {"config": {}}}, "file storage")[:33]
    'file storage, fsync every 120 s ('
    """
    config = varz.get("jetstream", {}).get("config", {})
    if config.get("sync_always"):
        return (
            f"fsync per write (jetstream sync_interval: always), {stored}: a crash of the "
            "server or its machine loses nothing acknowledged"
        )
    # nats-server before 2.10 reports no interval: its fixed one is two minutes
    seconds = config.get("sync_interval", 120_000_000_000) / 1e9
    return (
        f"{stored}, fsync every {seconds:g} s (the server's sync_interval, nats-server "
        f"{varz.get('version', '?')}): a server process crash loses nothing; a machine crash "
        f"can lose the last {seconds:g} s of acknowledged events (set sync_interval: always)"
    )


class NatsJetStreamBus:
    """:class:`~trimtab.bus.EventBus` on one JetStream stream with durable pull consumers."""

    def __init__(
        self,
        server: Client | str = "nats://127.0.0.1:4222",
        *,
        stream: str = "TT_EVENTS",
        prefix: str = "tt",
        partitions: int = 16,
        duplicate_window_s: float = 120.0,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 1000,
        fetch_timeout_s: float = 1.0,
        publish_timeout_s: float = 5.0,
        replicas: int = 1,
        monitor: str | None = None,
    ) -> None:
        # A URL connects lazily on first use, so the bus can be built outside an event loop.
        self._url = server if isinstance(server, str) else None
        self.nc: Client | None = None if isinstance(server, str) else server
        self.js: Any = None if self.nc is None else self.nc.jetstream()
        self.stream = stream
        self.prefix = prefix
        self.partitions = partitions
        self.duplicate_window_s = duplicate_window_s
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.fetch_timeout_s = fetch_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.replicas = replicas
        # The server's HTTP monitoring endpoint (``http://host:8222``): the one place its fsync
        # policy can be read from (a client connection does not see it).
        self.monitor = monitor
        self.subjects = [f"{prefix}.events.{p}" for p in range(partitions)]
        self._ready = False

    async def ensure_stream(self) -> None:
        """Connect if needed; create the stream if it does not exist (file storage, dedupe)."""
        if self._ready:
            return
        if self.nc is None:
            assert self._url is not None
            self.nc = await connect(self._url)
            self.js = self.nc.jetstream()
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(
                name=self.stream,
                subjects=[f"{self.prefix}.events.*"],
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=self.duplicate_window_s,
            )
        self._ready = True

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, events: list[AnyEvent]) -> int:
        """Append events (retries dropped by ``Nats-Msg-Id``); returns how many were new.

        Publishes are pipelined (many in flight, one wait for all acknowledgements); a batch
        not fully acknowledged within ``publish_timeout_s`` raises ``TimeoutError`` and is safe
        to publish again.
        """
        if not events:
            return 0
        await self.ensure_stream()
        subjects, n, js = self.subjects, self.partitions, self.js
        futures = []
        try:
            for e in events:
                futures.append(
                    await js.publish_async(
                        subjects[partition_of(e.user_id, n)],
                        _encoder.encode(e),
                        headers={"Nats-Msg-Id": message_id(e)},
                    )
                )
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.publish_timeout_s)
        except BaseException:
            for future in futures:
                future.cancel()  # frees the in-flight slots of unanswered publishes
            raise
        return sum(1 for ack in acks if not ack.duplicate)

    # -- consuming -----------------------------------------------------------------------
    async def ensure_group(self, group: str) -> None:
        """Create the group's durable consumer (reading from the start of the stream)."""
        await self.ensure_stream()
        try:
            await self.js.consumer_info(self.stream, group)
            return
        except nats.js.errors.NotFoundError:
            pass
        await self.js.add_consumer(
            self.stream,
            config=api.ConsumerConfig(
                durable_name=group,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                max_ack_pending=self.max_ack_pending,
                deliver_policy=api.DeliverPolicy.ALL,
                filter_subject=f"{self.prefix}.events.*",
            ),
        )

    async def subscribe(
        self, group: str, batch: int = 500, consumer: str | None = None
    ) -> AsyncGenerator[list[BusMessage], None]:
        """Batches for a member of ``group`` (the durable consumer named after the group).

        ``consumer`` only names this member in logs: JetStream tracks deliveries per group.
        """
        await self.ensure_group(group)
        info = await self.js.consumer_info(self.stream, group)
        if info.num_ack_pending:  # a member may have died holding them: let them expire
            await asyncio.sleep(self.ack_wait_s + self.fetch_timeout_s + 0.2)
        sub = await self.js.pull_subscribe_bind(durable=group, stream=self.stream)
        log.debug("%s joined group %s", consumer or default_consumer(), group)
        try:
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=self.fetch_timeout_s)
                except nats.errors.TimeoutError:
                    continue
                out = [BusMessage(m.reply, decode_one(m.data)) for m in msgs if m.reply]
                if out:
                    yield out
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def ack(self, group: str, ids: list[str]) -> None:
        """Acknowledge delivered messages (their ids are their ack subjects)."""
        if not ids or self.nc is None:
            return
        publish = self.nc.publish
        for reply in ids:
            await publish(reply, _ACK)
        await self.nc.flush()

    async def delete(self, ids: list[str]) -> int:
        """Delete delivered messages from the stream (events of erased users a consumer met).

        A message id is its ack subject, which carries the stream sequence.
        """
        deleted = 0
        for reply in ids:
            deleted += await self._delete_seq(Msg.Metadata._from_reply(reply).sequence.stream)
        return deleted

    async def _delete_seq(self, seq: int) -> bool:
        """Delete (and erase) one message; False when it is gone already: a consumer meeting
        an erased user's event and the erasure itself may both delete it."""
        try:
            return bool(await self.js.delete_msg(self.stream, seq))
        except nats.js.errors.APIError as exc:
            if exc.err_code in _GONE:
                return False
            raise

    async def compact(self, done: set[str] | None = None) -> bool:
        """Nothing to rewrite: JetStream erases a deleted message's bytes when it deletes it
        (``delete_msg`` without ``no_erase``)."""
        return True

    async def durability(self) -> str:
        """What an acknowledged write survives: the stream's storage, and the server's fsync
        policy read from its monitoring endpoint (``/varz``) when the bus knows one."""
        await self.ensure_stream()
        info = await self.js.stream_info(self.stream)
        # nats-py parses the storage as a StorageType, or leaves it a str (2.15 servers)
        storage = getattr(info.config.storage, "value", info.config.storage) or "?"
        stored = f"{storage} storage, {info.config.num_replicas or 1} replica(s)"
        if self.monitor is None:
            return (
                f"{stored}: a server process crash loses nothing; a machine crash loses what "
                "the server has not fsynced (every 2 min by default; set jetstream "
                "sync_interval: always, and monitor=<its http url> in the bus URL to check it)"
            )
        try:
            varz = await asyncio.to_thread(_read_varz, self.monitor)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return f"{stored}; fsync policy unknown: monitor {self.monitor} unreadable ({exc})"
        return sync_policy(varz, stored)

    # -- inspection ----------------------------------------------------------------------
    async def count(self) -> int:
        """How many events the stream holds."""
        await self.ensure_stream()
        info = await self.js.stream_info(self.stream)
        return int(info.state.messages)

    async def iter_all(self, batch: int = 5000) -> AsyncIterator[AnyEvent]:
        """Every logged event in stream order (an unacknowledged throwaway consumer)."""
        total = await self.count()
        name = f"iter_{uuid.uuid4().hex}"
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.ALL,
            inactive_threshold=60.0,
        )
        sub = await self.js.pull_subscribe(
            f"{self.prefix}.events.*", durable=name, stream=self.stream, config=config
        )
        try:
            seen = 0
            while seen < total:
                try:
                    msgs = await sub.fetch(min(batch, total - seen), timeout=self.fetch_timeout_s)
                except nats.errors.TimeoutError:
                    break
                for m in msgs:
                    if m.reply:
                        seen += 1
                        yield decode_one(m.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, name)

    async def erase_user(self, user_id: str, batch: int = 1000) -> int:
        """Delete every logged event of one user (erasure); returns how many were deleted.

        Only the user's own partition subject can hold them: a throwaway consumer filtered to
        it reads them, and each of the user's messages is deleted by its stream sequence.
        """
        await self.ensure_stream()
        subject = self.subjects[partition_of(user_id, self.partitions)]
        info = await self.js.stream_info(self.stream, subjects_filter=subject)
        total = (info.state.subjects or {}).get(subject, 0) if info.state.subjects else None
        name = f"erase_{uuid.uuid4().hex}"
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=subject,
            inactive_threshold=60.0,
        )
        sub = await self.js.pull_subscribe(subject, durable=name, stream=self.stream, config=config)
        doomed: list[int] = []
        try:
            seen = 0
            while total is None or seen < total:
                try:
                    msgs = await sub.fetch(batch, timeout=self.fetch_timeout_s)
                except nats.errors.TimeoutError:
                    break
                for m in msgs:
                    seen += 1
                    if decode_one(m.data).user_id == user_id:
                        doomed.append(m.metadata.sequence.stream)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, name)
        deleted = 0
        for seq in doomed:
            deleted += await self._delete_seq(seq)
        return deleted

    async def pending(self, group: str) -> int:
        """Messages the group has not acknowledged yet (undelivered or in flight)."""
        await self.ensure_stream()
        info = await self.js.consumer_info(self.stream, group)
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def drop(self) -> None:
        """Delete the stream (tests, teardown)."""
        await self.ensure_stream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_stream(self.stream)
        self._ready = False

    async def close(self) -> None:
        if self.nc is None:
            return
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()
