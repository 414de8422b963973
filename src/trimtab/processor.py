"""The bus consumer: event bus → features → state store, then acknowledge.

For each batch from the bus, the :class:`BusConsumer` loads the state of the users it has not cached
(``get_many``), applies the events with :class:`~trimtab.features.FeatureProcessor`, writes the
changed states back (``put_many``) and only then acknowledges the batch. A crash anywhere
before the ack means redelivery; the per-user event-id window in the state turns events already
applied into no-ops, so nothing is lost and nothing is counted twice.

With a versioned store (:class:`~trimtab.store.redis.RedisStateStore`) writes are
compare-and-set (:func:`~trimtab.store.cache.put_versioned`): when another writer changed a
user meanwhile, that user is reloaded and the batch's events re-applied to the fresh state,
so cached state never overwrites newer state.

Erased users stay erased: loading a batch's users also reads their tombstones; events of an
erased user (published by a process that had not heard of the erasure yet) are deleted from
the log instead of applied, and the store refuses to write a tombstoned user in any case. The
cache of states is bounded (``storage.max_users_in_memory``): only written states are evicted.

Run it as a process::

    python -m trimtab.processor --bus redis://127.0.0.1:6379 --state redis://127.0.0.1:6379 \\
        --config site.yaml --group features --consumer worker-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trimtab.bus import BusMessage, EventBus
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, decode_state, encode_state
from trimtab.store import StateStore, VersionedStateStore
from trimtab.store.cache import DEFAULT_MAX_USERS, evict, put_versioned

log = logging.getLogger("trimtab.processor")


@dataclass
class ConsumerStats:
    events: int = 0
    batches: int = 0
    conflicts: int = 0


class BusConsumer:
    """Consumes one group of a bus into a state store. See the module docstring.

    (Not to be confused with :class:`~trimtab.features.FeatureProcessor`, which it drives:
    that one applies events to states in memory; this one feeds it from the bus and stores
    what it computed.)
    """

    def __init__(
        self,
        bus: EventBus,
        store: StateStore,
        features: FeatureProcessor,
        group: str = "features",
        consumer: str | None = None,
        batch: int = 1000,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        self.bus = bus
        self.store = store
        self.features = features
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.max_users = max_users
        self.versions: dict[str, int] = {}
        # A shared (versioned) store is written with compare-and-set; an embedded one has a
        # single writer, this consumer.
        self.shared: VersionedStateStore | None = (
            store if isinstance(store, VersionedStateStore) else None
        )
        self.erased: set[str] = set()  # tombstoned users met so far
        self.stats = ConsumerStats()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Process batches until ``stop`` is set (checked between batches) or cancelled."""
        batches = self.bus.subscribe(self.group, batch=self.batch, consumer=self.consumer)
        async with contextlib.aclosing(batches) as stream:
            async for messages in stream:
                await self.process(messages)
                if stop is not None and stop.is_set():
                    return

    async def process(self, messages: list[BusMessage]) -> None:
        """Load, apply, store, then acknowledge one batch."""
        await self._load({m.event.user_id for m in messages} - self.features.states.keys())
        if self.erased:
            doomed = [m.id for m in messages if m.event.user_id in self.erased]
            if doomed:
                await self.bus.delete(doomed)
            messages_kept = [m for m in messages if m.event.user_id not in self.erased]
        else:
            messages_kept = messages
        events = [m.event for m in messages_kept]
        self.features.apply(events)
        await self._store(events)
        await self.bus.ack(self.group, [m.id for m in messages])
        self.stats.events += len(messages)
        self.stats.batches += 1
        self._evict()

    async def _load(self, user_ids: set[str]) -> None:
        """Load these users' states and learn which of them were erased."""
        user_ids = user_ids - self.erased
        if not user_ids:
            return
        states = self.features.states
        if self.shared is not None:
            rows = await self.shared.get_many_versioned(user_ids, erased=self.erased)
            for user_id, (blob, version) in rows.items():
                states[user_id] = decode_state(blob)
                self.versions[user_id] = version
        else:
            self.erased |= await self.store.erased(user_ids)
            for user_id, blob in (await self.store.get_many(user_ids)).items():
                states[user_id] = decode_state(blob)
        for user_id in user_ids & self.erased:
            self.features.forget(user_id)

    async def _store(self, events: list[AnyEvent]) -> None:
        dirty = self.features.take_dirty()
        blobs = {u: encode_state(s) for u, s in dirty.items()}
        if self.shared is None:
            await self.store.put_many(blobs)
            return

        async def redo(conflicts: set[str]) -> dict[str, bytes]:
            # Another writer got there first: start these users again from the stored state.
            self.stats.conflicts += len(conflicts)
            for user_id in conflicts:
                self.features.forget(user_id)
                self.versions.pop(user_id, None)
            await self._load(conflicts)
            self.features.apply(
                e for e in events if e.user_id in conflicts and e.user_id not in self.erased
            )
            return {u: encode_state(s) for u, s in self.features.take_dirty().items()}

        _, left = await put_versioned(self.shared, blobs, self.versions, redo, self._refused)
        if left:
            raise RuntimeError(f"state of {len(left)} users kept changing under this consumer")

    def _refused(self, user_id: str) -> None:
        """Erased meanwhile: never written back."""
        self.erased.add(user_id)
        self.features.forget(user_id)
        self.versions.pop(user_id, None)

    def _evict(self) -> None:
        """Keep the cache bounded (every state in it is written by now)."""
        evict(self.features.states, self.max_users, self.features.dirty, self.versions)


# -- command line --------------------------------------------------------------------------
def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trimtab.processor",
        description="Consume events from a bus into per-user feature state.",
    )
    parser.add_argument("--bus", default=None, help="bus URL (redis://, nats://, sqlite:)")
    parser.add_argument("--state", default=None, help="state store URL (redis://, sqlite:)")
    parser.add_argument("--config", required=True, help="site config file (features)")
    parser.add_argument("--group", default="features", help="consumer group")
    parser.add_argument("--consumer", default=None, help="this consumer's name in the group")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--data-dir", default=None, help="directory for the embedded stores")
    return parser.parse_args(list(argv) if argv is not None else None)


async def _main(args: argparse.Namespace) -> ConsumerStats:
    from trimtab.backends import open_event_bus, open_state_store
    from trimtab.config import load_config

    config = load_config(args.config)
    data_dir = Path(args.data_dir or config.storage.data_dir)
    bus = open_event_bus(args.bus, data_dir)
    store = open_state_store(args.state, data_dir)
    processor = BusConsumer(
        bus,
        store,
        FeatureProcessor(config.feature_specs()),
        group=args.group,
        consumer=args.consumer,
        batch=args.batch,
        max_users=config.storage.max_users_in_memory,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(processor.run(stop))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # finish the batch in hand, then stop waiting for the next one
            await asyncio.wait({task}, timeout=5.0)
            task.cancel()
            # Unacknowledged work is redelivered; don't let a stuck client read block exit.
            await asyncio.wait({task}, timeout=2.0)
        failure = task.exception() if task.done() and not task.cancelled() else None
        if failure is not None:
            raise failure
    finally:
        stopped.cancel()
        await bus.close()
        await store.close()
    return processor.stats


def main(argv: Iterable[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stats = asyncio.run(_main(_parse(argv)))
    print(
        f"processed {stats.events} events in {stats.batches} batches "
        f"({stats.conflicts} write conflicts)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BusConsumer", "ConsumerStats", "main"]
