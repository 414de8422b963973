"""The scaled deployment: one process among many, on Redis and Redis Streams or NATS JetStream.

Every `trimtab serve` process is stateless apart from caches and its local spool; what must be
shared lives in the backends (see ``docs/deployment.md``). :class:`Scaled` is the
:class:`~trimtab.runtime.Deployment` that says so to the one :class:`~trimtab.runtime.Runtime`:

- **The event log is the bus, and a 2xx means durable.** Accepted events go to a
  :class:`~trimtab.backends.DurablePublisher`: the request is answered once the bus confirmed
  the events, or, while the bus cannot, once they are committed to the local spool
  (``spool.sqlite`` in the data directory, fsynced), which is sent to the bus when it is back
  (also by the next run after a crash). If neither is possible the collector answers 503 with
  ``Retry-After``. Meanwhile ``/health`` says ``degraded``.
- **Features are applied at the edge** for latency: the process loads the users' states from
  Redis, applies the events, and writes back with compare-and-set on a per-user version; a
  conflict (the same user's events arriving at two processes at once) reloads and re-applies.
- **A bus consumer is the safety net.** Each process also runs a
  :class:`~trimtab.processor.BusConsumer` in the shared consumer group: every logged event is
  applied to the shared state even if the process that accepted it died first. Events the
  edge already applied are no-ops (the per-user event-id window), so nothing counts twice.
- **Deciding needs fresh state**: ``prepare`` reloads the users before a decision; when
  Redis does not answer within the site's deadline the collector serves defaults, flagged
  ``degraded``.
- **Erasure holds everywhere**: it leaves a tombstone in Redis that every state write checks
  (so no edge, consumer or sticky save writes the user back), drops the user's events from the
  log and the spool, erases every decision log in the data directory (this process's, earlier
  lifetimes', other workers') and announces the erasure on the ``<prefix>:erasures`` stream, by
  token, so every other process erases its own decision logs too. Events of the user that were
  in flight elsewhere are deleted by the consumer that meets them.

Each process writes its own decision log (``decisions-<host>-<pid>.sqlite`` in its data dir).
The states it caches are bounded by ``storage.max_users_in_memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimtab import logschema
from trimtab.backends import DurablePublisher, open_event_bus, open_state_store
from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, serve_policies
from trimtab.blocking import finish_in_thread
from trimtab.bus import BusMessage
from trimtab.bus.spool import Spool
from trimtab.config import SiteConfig
from trimtab.decide import STICKY_ATTRIBUTE
from trimtab.decisionlog import SqliteDecisionLog, erase_from_files
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState, decode_state, encode_state
from trimtab.privacy import erasure_token
from trimtab.processor import BusConsumer
from trimtab.store import VersionedStateStore
from trimtab.store.cache import evict, put_versioned

if TYPE_CHECKING:
    from trimtab.runtime import Runtime

log = logging.getLogger("trimtab.scaled")
SAFETY_NET_GRACE_S = 3.0


class SafetyNet(BusConsumer):
    """The bus consumer behind the edge: it applies a batch only once it is ``grace_s`` old.

    Edges apply what they accept within milliseconds; the consumer exists for events whose
    edge died first. Waiting out the grace period keeps it from racing an edge that is still
    applying, which could apply one user's events out of their order.
    """

    def __init__(self, *args: Any, grace_s: float = SAFETY_NET_GRACE_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_s = grace_s

    async def process(self, messages: list[BusMessage]) -> None:
        if messages:
            newest = max(m.event.received for m in messages) / 1000.0
            wait = newest + self.grace_s - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        await super().process(messages)


class Scaled:
    """The :class:`~trimtab.runtime.Deployment` over shared backends; see the module."""

    kind = "scaled"
    shared = True

    def __init__(
        self,
        state_url: str | None = None,
        bus_url: str | None = None,
        group: str = "features",
        run_processor: bool = True,
    ) -> None:
        self._state_url = state_url
        self._bus_url = bus_url
        self.group = group
        self.run_processor = run_processor
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    def open(self, runtime: Runtime) -> SqliteDecisionLog:
        self.runtime = runtime
        config, folder = runtime.config, runtime.data_dir
        self.state_url = self._state_url or os.environ.get("TRIMTAB_STATE") or config.storage.state
        self.bus_url = self._bus_url or os.environ.get("TRIMTAB_BUS") or config.storage.bus
        store = open_state_store(self.state_url, folder)
        if not isinstance(store, VersionedStateStore):
            raise ValueError("scaled out, the state store must be shared: TRIMTAB_STATE=redis://…")
        self.store = store
        self.bus = open_event_bus(self.bus_url, folder)
        self.publisher = DurablePublisher(
            self.bus,
            Spool(folder / "spool.sqlite"),
            max_spooled=config.storage.max_spooled_events,
            erased=runtime.erased,
        )
        self.versions: dict[str, int] = {}  # the stored version of each cached state
        self._sticky: dict[str, dict[str, list[float]]] = {}  # assignments not yet in Redis
        self._erased_here: set[str] = set()  # tokens this process erased itself
        self._journal_cursor = folder / "erasures.cursor"
        self._safety_net: SafetyNet | None = None
        self._stopped = False
        self.state_error = ""
        self.bus_durability = ""
        own_log = folder / f"decisions-{self.consumer}.sqlite"
        return SqliteDecisionLog(own_log, erased=runtime.erased)

    def recover(self) -> int:
        return 0  # the spool is sent at start; the safety net applies what no edge did

    # -- where events are logged -----------------------------------------------------------
    def log_now(self, events: list[AnyEvent]) -> None:
        raise RuntimeError("a shared bus is written from the event loop: await accept()")

    async def log(self, events: list[AnyEvent]) -> None:
        await self.publisher.publish(events)

    # -- states -----------------------------------------------------------------------------
    def load_now(self, user_ids: Iterable[str]) -> None:
        pass  # states are loaded from Redis by load() (the collector's prepare)

    async def load(self, user_ids: Iterable[str]) -> None:
        """Load (or refresh) these users' states, and learn which of them were erased."""
        erased = self.runtime.erased
        wanted = set(user_ids) - erased
        if not wanted:
            return
        rows = await self.store.get_many_versioned(wanted, erased)
        processor = self.runtime.processor
        states = processor.states
        for user in wanted:
            if user in erased:
                self.runtime.forget(user)
            elif user in rows:
                blob, version = rows[user]
                if self.versions.get(user) != version or user not in states:
                    states[user] = decode_state(blob)
                    self.versions[user] = version
            elif self.versions.get(user, 0) != 0:  # deleted elsewhere
                states.pop(user, None)
                self.versions.pop(user, None)
        evict(states, self.runtime.max_users, processor.dirty, self.versions)

    async def apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Apply and write back with compare-and-set; when the state store is unreachable the
        events are durable in the bus (or the spool) and the consumer group applies them."""
        try:
            changed = await self._apply(events)
        except Exception as exc:
            self.state_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("state store unavailable, events left to the bus consumer: %s", exc)
            return set()
        self.state_error = ""
        return changed

    async def _apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        # Users already cached (the collector's prepare() has just loaded them) are not read
        # again: if another process changed one meanwhile, the compare-and-set below fails
        # for that user, who is then reloaded and re-applied.
        processor, erased = self.runtime.processor, self.runtime.erased
        await self.load({e.user_id for e in events} - processor.states.keys())
        changed = processor.apply(e for e in events if e.user_id not in erased)

        async def redo(conflicts: set[str]) -> dict[str, bytes]:
            # another process wrote these users meanwhile: start again from what it wrote
            nonlocal changed
            for user in conflicts:
                processor.forget(user)
                self.versions.pop(user, None)
            await self.load(conflicts)
            changed |= processor.apply(
                e for e in events if e.user_id in conflicts and e.user_id not in erased
            )
            return {u: encode_state(s) for u, s in processor.take_dirty().items()}

        blobs = {u: encode_state(s) for u, s in processor.take_dirty().items()}
        # a user erased by another process meanwhile is refused, and forgotten here
        _, left = await put_versioned(self.store, blobs, self.versions, redo, self.runtime.forget)
        if left:
            log.warning("%d users kept changing; left to the bus consumer", len(left))
        return changed

    def remember(self, user_id: str, key: str, value: list[float]) -> None:
        self._sticky.setdefault(user_id, {})[key] = value  # the flush writes it to Redis

    def serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """The config's policies, keeping what the running ones learned (the stored states
        are read at start)."""
        return serve_policies(config.slots, self.runtime.policies)

    # -- the flush ------------------------------------------------------------------------
    async def flush(self, rows: list[tuple[Any, ...]]) -> None:
        await self._save_sticky()
        await finish_in_thread(self.runtime.decision_log.write_rows, rows)

    def flush_now(self, rows: list[tuple[Any, ...]]) -> None:
        self.runtime.decision_log.write_rows(rows)  # sticky assignments: by the async flush

    def unwritten(self) -> int:
        return len(self._sticky)

    async def _save_sticky(self) -> None:
        """Write pending sticky assignments into the shared state (compare-and-set).

        An assignment leaves the pending set only once Redis has it, so a save interrupted by
        shutdown (or a Redis outage) is simply done again.
        """
        pending = {user: dict(values) for user, values in self._sticky.items()}
        if not pending:
            return
        stored: dict[str, int] = {}  # the versions the merged states were read at

        async def merged(users: set[str]) -> dict[str, bytes]:
            """The users' stored states with their pending assignments added."""
            rows = await self.store.get_many_versioned(users)
            blobs = {}
            for user in users:
                blob, version = rows.get(user, (None, 0))
                state = decode_state(blob) if blob is not None else UserState(user_id=user)
                state.values.setdefault(STICKY_ATTRIBUTE, {}).update(pending[user])
                blobs[user], stored[user] = encode_state(state), version
            return blobs

        blobs = await merged(set(pending))
        written, _ = await put_versioned(self.store, blobs, stored, merged, self.runtime.forget)
        self.versions.update(written)
        for user in written:
            left = self._sticky.get(user, {})
            for key, value in pending[user].items():
                if left.get(key) == value:
                    del left[key]
            if not left:
                self._sticky.pop(user, None)

    async def _save_policies(self) -> None:
        policies = self.runtime.policies
        blobs = {POLICY_KEY + n: p.to_state() for n, p in policies.items() if p.updates}
        with contextlib.suppress(Exception):
            await self.store.put_many(blobs)

    # -- erasure ------------------------------------------------------------------------------
    def forget(self, user_id: str) -> None:
        self.versions.pop(user_id, None)
        self._sticky.pop(user_id, None)

    async def erase(self, user_id: str) -> dict[str, int]:
        """The tombstone every writer checks, the spool, the bus, every decision log in the
        data directory, then the announcement to the other processes."""
        self._erased_here.add(erasure_token(user_id))
        state = await self.store.erase(user_id)
        spooled = await asyncio.to_thread(self.publisher.erase_user, user_id)
        events = await self.bus.erase_user(user_id)
        decisions = await asyncio.to_thread(self._erase_decisions, user_id)
        await self.store.announce_erasure(user_id)
        return {"state": int(state), "events": events + spooled, "decisions": decisions}

    def _erase_decisions(self, user_id: str) -> int:
        """This process's decision log, then every other one in the data directory."""
        decision_log = self.runtime.decision_log
        erased = decision_log.erase_user(user_id)
        decision_log.checkpoint_sync()
        return erased + erase_from_files(self._other_decision_logs(), [user_id])

    def _other_decision_logs(self) -> list[Path]:
        own = Path(self.runtime.decision_log.path).name
        folder = self.runtime.data_dir
        return [p for p in logschema.decision_log_paths(folder) if p.name != own]

    async def erased_elsewhere(self) -> bool:
        """Erase, from this data directory's decision logs and spool, users other processes
        erased (the erasure journal, read from where this directory last stopped)."""
        journal = self._journal_cursor
        last = journal.read_text().strip() if journal.exists() else "0"
        found = False
        while True:
            entries = await self.store.erasures_after(last)
            if not entries:
                return found
            tokens = {t for _, t in entries if t not in self._erased_here}
            if tokens:
                states = self.runtime.processor.states
                for user in [u for u in states if erasure_token(u) in tokens]:
                    self.runtime.forget(user)
                own = [Path(self.runtime.decision_log.path)]
                await asyncio.to_thread(
                    erase_from_files, [*own, *self._other_decision_logs()], (), tokens
                )
                await asyncio.to_thread(self.publisher.spool.erase_tokens, tokens)
                found = True
            last = entries[-1][0]
            tmp = journal.with_suffix(".tmp")
            tmp.write_text(last)
            tmp.replace(journal)

    async def compact(self) -> bool:
        """This process's files (decision log, spool), and Redis rewrites its AOF."""
        await asyncio.to_thread(self.runtime.decision_log.compact_sync)
        await asyncio.to_thread(self.publisher.spool.compact_sync)
        servers: set[str] = set()  # state and bus may be one Redis: ask it once
        stored = await self.store.compact(servers)
        logged = await self.bus.compact(servers)
        return stored and logged

    # -- lifecycle and health ------------------------------------------------------------------
    async def start(self) -> list[asyncio.Task[None]]:
        runtime = self.runtime
        names = [POLICY_KEY + name for name in runtime.policies]
        with contextlib.suppress(Exception):  # Redis away: the policies start afresh
            stored = await self.store.get_many(names)
            runtime.policies = serve_policies(runtime.config.slots, {}, stored)
            runtime.engine.policies = runtime.policies
        self.publisher.start()  # sends what an earlier run left in the spool
        with contextlib.suppress(Exception):
            self.bus_durability = await asyncio.wait_for(self.bus.durability(), 2.0)
            if not self.bus_durability.startswith("fsync per write"):
                log.warning("event bus durability: %s", self.bus_durability)
        with contextlib.suppress(Exception):
            if await self.erased_elsewhere():
                runtime.compaction_due(0.0)
        if not self.run_processor:
            return []
        self._safety_net = SafetyNet(
            self.bus,
            open_state_store(self.state_url, runtime.data_dir),
            FeatureProcessor(runtime.config.feature_specs()),
            group=self.group,
            consumer=self.consumer,
            max_users=runtime.max_users,
        )
        return [asyncio.create_task(self._run_safety_net(self._safety_net))]

    @staticmethod
    async def _run_safety_net(net: SafetyNet) -> None:
        while True:
            try:
                await net.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus or store is down: retry, never give up
                log.warning("bus consumer stopped (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Send what is spooled (what is left stays in the spool), store the policies, close
        the connections."""
        await self.publisher.close(timeout=10.0)
        await self._save_policies()
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.bus.close()
        await self.store.close()
        if self._safety_net is not None:
            await self._safety_net.store.close()

    def close(self) -> None:
        from trimtab.runtime import run_now

        if not self._stopped:  # never started, or not stopped: nothing pending is lost
            with contextlib.suppress(Exception):
                run_now(self._close_connections())
        self.publisher.spool.close_sync()
        self.runtime.decision_log.close_sync()

    def degraded(self) -> list[str]:
        degraded = []
        if not self.publisher.healthy:
            degraded.append(
                f"event bus unreachable, {self.publisher.buffered} events spooled "
                f"({self.publisher.last_error})"
            )
        if self.state_error:
            degraded.append(f"state store: {self.state_error}")
        return degraded

    def figures(self) -> dict[str, Any]:
        return {
            "state": self.state_url.split("?")[0],
            "bus": self.bus_url.split("?")[0],
            "bus_durability": self.bus_durability,
            "buffered": self.publisher.buffered,
        }
