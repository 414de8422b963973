"""The pipeline of one process among many, on Redis and Redis Streams or NATS JetStream.

Every `trimtab serve` process is stateless apart from caches and its local spool; what must be
shared lives in the backends (see ``docs/deployment.md``):

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
- **Deciding needs fresh state**: :meth:`prepare` reloads the users before a decision; when
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
from typing import Any

from trimtab import logschema
from trimtab.backends import DurablePublisher, open_event_bus, open_state_store
from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, serve_policies
from trimtab.blocking import finish_in_thread
from trimtab.bus import BusMessage
from trimtab.bus.spool import Spool
from trimtab.config import SiteConfig
from trimtab.decide import STICKY_ATTRIBUTE, Decision
from trimtab.decisionlog import SqliteDecisionLog, erase_from_files
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState, decode_state, encode_state
from trimtab.models.live import attach as attach_models
from trimtab.pipeline import PipelineBase
from trimtab.privacy import erasure_token
from trimtab.processor import BusConsumer
from trimtab.reload import ConfigWatcher
from trimtab.store import VersionedStateStore
from trimtab.store.cache import evict, put_versioned
from trimtab.store.sqlite import StorageError

log = logging.getLogger("trimtab.scaled")
SAFETY_NET_GRACE_S = 3.0
ERASURE_COMPACTION_DELAY_S = 1.0


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


class ScaledRuntime(PipelineBase):
    """The collector-facing pipeline over shared backends (same interface as ``Runtime``)."""

    def __init__(
        self,
        config: SiteConfig,
        data_dir: str | Path | None = None,
        state_url: str | None = None,
        bus_url: str | None = None,
        group: str = "features",
        run_processor: bool = True,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir or config.storage.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_url = state_url or os.environ.get("TRIMTAB_STATE") or config.storage.state
        self.bus_url = bus_url or os.environ.get("TRIMTAB_BUS") or config.storage.bus
        store = open_state_store(self.state_url, self.data_dir)
        if not isinstance(store, VersionedStateStore):
            raise ValueError("scaled out, the state store must be shared: TRIMTAB_STATE=redis://…")
        self.store = store
        self.bus = open_event_bus(self.bus_url, self.data_dir)
        self.erased: set[str] = set()  # tombstoned users met so far (shared, see below)
        self._erased_here: set[str] = set()  # tokens this process erased itself
        self.publisher = DurablePublisher(
            self.bus,
            Spool(self.data_dir / "spool.sqlite"),
            max_spooled=config.storage.max_spooled_events,
            erased=self.erased,
        )
        self.group = group
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.run_processor = run_processor
        self.processor = FeatureProcessor(config.feature_specs())
        self.models = attach_models(self.processor, config, self.data_dir)  # scores, segments
        self.max_users = config.storage.max_users_in_memory
        self.versions: dict[str, int] = {}
        self.decision_log = SqliteDecisionLog(
            self.data_dir / f"decisions-{self.consumer}.sqlite", erased=self.erased
        )
        self.policies: dict[str, ServedPolicy] = serve_policies(config.slots, {})
        self.engine = self._new_engine()
        self.events_ingested = 0
        self.state_error = ""
        self.config_error = ""
        self.bus_durability = ""
        self._sticky: dict[str, dict[str, list[float]]] = {}  # assignments not yet in Redis
        self._tasks: list[asyncio.Task[None]] = []
        self._safety_net: SafetyNet | None = None
        self._journal_cursor = self.data_dir / "erasures.cursor"
        self._compact_after: float | None = None  # rewrite files after erasures, from when
        self._compacting = False
        self.compaction_error = ""

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, flush_interval_s: float) -> None:
        names = [POLICY_KEY + name for name in self.policies]
        with contextlib.suppress(Exception):  # Redis away: the policies start afresh
            stored = await self.store.get_many(names)
            self.policies = serve_policies(self.config.slots, {}, stored)
            self.engine.policies = self.policies
        self.publisher.start()  # sends what an earlier run left in the spool
        durability = getattr(self.bus, "durability", None)
        if durability is not None:
            with contextlib.suppress(Exception):
                self.bus_durability = await asyncio.wait_for(durability(), 2.0)
                if not self.bus_durability.startswith("fsync per write"):
                    log.warning("event bus durability: %s", self.bus_durability)
        with contextlib.suppress(Exception):
            await self._apply_erasure_journal()
        if self.run_processor:
            self._safety_net = SafetyNet(
                self.bus,
                open_state_store(self.state_url, self.data_dir),
                FeatureProcessor(self.config.feature_specs()),
                group=self.group,
                consumer=self.consumer,
                max_users=self.max_users,
            )
            self._tasks.append(asyncio.create_task(self._run_safety_net()))
        self._tasks.append(asyncio.create_task(self._flush_forever(flush_interval_s)))

    async def _run_safety_net(self) -> None:
        assert self._safety_net is not None
        while True:
            try:
                await self._safety_net.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus or store is down: retry, never give up
                log.warning("bus consumer stopped (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._compact_after is not None:  # erasures pending: rewrite before leaving
            with contextlib.suppress(Exception):
                await self.compact()
        await self.publisher.close(timeout=10.0)  # what is left stays in the spool
        with contextlib.suppress(Exception):
            await self._save_sticky()
        await self._save_policies()
        with contextlib.suppress(Exception):
            self.decision_log.flush_sync()
        await self.bus.close()
        await self.store.close()
        if self._safety_net is not None:
            await self._safety_net.store.close()

    async def _flush_forever(self, interval_s: float) -> None:
        watcher = ConfigWatcher(self.config.source, self.reload)
        while True:
            await asyncio.sleep(interval_s)
            watcher.check()
            self.config_error = watcher.last_error
            try:
                await self._save_sticky()
                for policy in self.policies.values():
                    policy.expire()
                rows = self.decision_log.take_rows()
                try:
                    await finish_in_thread(self.decision_log.write_rows, rows)
                except BaseException:  # failed or stopping: the next write has them again
                    self.decision_log.restore(rows)
                    raise
                await self._apply_erasure_journal()
                due = self._compact_after
                if due is not None and time.monotonic() >= due:
                    await self.compact()
            except Exception as exc:
                log.warning("flush failed, will retry: %s", exc)

    async def compact(self) -> None:
        """After erasures: rewrite this process's files (decision log, spool) and have Redis
        rewrite its AOF, so no byte of an erased user survives on disk (the flush loop runs
        this about a second after the last erasure; a burst costs one rewrite)."""
        self._compacting = True  # before clearing the due time: health never sees neither
        self._compact_after = None
        try:
            await asyncio.to_thread(self.decision_log.compact_sync)
            await asyncio.to_thread(self.publisher.spool.compact_sync)
            servers: set[str] = set()  # state and bus may be one Redis: ask it once
            done = [await self.store.compact(servers)]
            bus_compact = getattr(self.bus, "compact", None)
            if bus_compact is not None:
                done.append(await bus_compact(servers))
        except Exception as exc:
            self.compaction_error = f"{type(exc).__name__}: {exc}"[:300]
            self._compact_after = time.monotonic() + 5.0
            raise
        finally:
            self._compacting = False
        if not all(done):  # Redis was rewriting already (maybe from before): again soon
            self._compact_after = time.monotonic() + 1.0
            return
        self.compaction_error = ""

    async def _save_policies(self) -> None:
        blobs = {POLICY_KEY + n: p.to_state() for n, p in self.policies.items() if p.updates}
        with contextlib.suppress(Exception):
            await self.store.put_many(blobs)

    # -- the collector's interface ------------------------------------------------------
    async def accept(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Make events durable (bus or spool), then apply them to the shared state.

        Raises :class:`~trimtab.store.sqlite.StorageError` when they cannot be made durable:
        nothing is acknowledged then. Events of erased users are dropped.
        """
        if self.erased:
            events = [e for e in events if e.user_id not in self.erased]
        if not events:
            return set()
        await self.publisher.publish(events)
        self.events_ingested += len(events)
        for policy in self.policies.values():
            policy.observe(events)
        try:
            return await self._apply(events)
        except Exception as exc:
            # The state store is unreachable: the events are durable in the bus (or the spool)
            # and the consumer group applies them when it is back.
            self.state_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("state store unavailable, events left to the bus consumer: %s", exc)
            return set()

    async def _apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        # Users already cached (the collector's prepare() has just loaded them) are not read
        # again: if another process changed one meanwhile, the compare-and-set below fails
        # for that user, who is then reloaded and re-applied.
        await self._load({e.user_id for e in events} - self.processor.states.keys())
        changed = self.processor.apply(e for e in events if e.user_id not in self.erased)

        async def redo(conflicts: set[str]) -> dict[str, bytes]:
            # another process wrote these users meanwhile: start again from what it wrote
            nonlocal changed
            for user in conflicts:
                self.processor.forget(user)
                self.versions.pop(user, None)
            await self._load(conflicts)
            changed |= self.processor.apply(
                e for e in events if e.user_id in conflicts and e.user_id not in self.erased
            )
            return {u: encode_state(s) for u, s in self.processor.take_dirty().items()}

        blobs = {u: encode_state(s) for u, s in self.processor.take_dirty().items()}
        # a user erased by another process meanwhile is refused, and forgotten here
        _, left = await put_versioned(self.store, blobs, self.versions, redo, self._forget)
        if left:
            log.warning("%d users kept changing; left to the bus consumer", len(left))
        self.state_error = ""
        return changed

    async def _load(self, user_ids: Iterable[str]) -> None:
        """Load (or refresh) these users' states, and learn which of them were erased."""
        wanted = set(user_ids) - self.erased
        if not wanted:
            return
        rows = await self.store.get_many_versioned(wanted, self.erased)
        states = self.processor.states
        for user in wanted:
            if user in self.erased:
                self._forget(user)
            elif user in rows:
                blob, version = rows[user]
                if self.versions.get(user) != version or user not in states:
                    states[user] = decode_state(blob)
                    self.versions[user] = version
            elif self.versions.get(user, 0) != 0:
                # deleted elsewhere
                states.pop(user, None)
                self.versions.pop(user, None)
        evict(states, self.max_users, self.processor.dirty, self.versions)

    def _forget(self, user: str) -> None:
        """Drop everything this process holds of an erased user (on the event loop)."""
        self.erased.add(user)
        self.processor.forget(user)
        self.versions.pop(user, None)
        self._sticky.pop(user, None)
        self.decision_log.forget(user)

    async def prepare(self, user_ids: Iterable[str]) -> None:
        """Reload these users (other processes may have changed them) before deciding."""
        await self._load(user_ids)

    def features_of(self, user_id: str, session_id: str, page_view_id: str = "") -> dict[str, Any]:
        return self.processor.features_of(user_id, session_id, page_view_id)

    def decide(
        self, user_id: str, session_id: str, slots: Iterable[str] | None = None
    ) -> list[Decision]:
        return self.engine.decide(user_id, session_id, slots)

    def state_of(self, user_id: str) -> UserState | None:
        return self.processor.states.get(user_id)

    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky assignment in the user's state; the flush loop writes it to Redis."""
        if user_id in self.erased:
            return
        value: list[float] = [variation, propensity]
        self.processor.set_user_value(user_id, STICKY_ATTRIBUTE, key, value)
        self._sticky.setdefault(user_id, {})[key] = value

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
        written, _ = await put_versioned(self.store, blobs, stored, merged, self._forget)
        self.versions.update(written)
        for user in written:
            left = self._sticky.get(user, {})
            for key, value in pending[user].items():
                if left.get(key) == value:
                    del left[key]
            if not left:
                self._sticky.pop(user, None)

    def _serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """The config's policies, keeping what the running ones learned (the stored states
        are read at start)."""
        return serve_policies(config.slots, self.policies)

    def health(self) -> dict[str, Any]:
        degraded = []
        if not self.publisher.healthy:
            degraded.append(
                f"event bus unreachable, {self.publisher.buffered} events spooled "
                f"({self.publisher.last_error})"
            )
        if self.state_error:
            degraded.append(f"state store: {self.state_error}")
        if self.config_error:
            degraded.append(f"config change refused: {self.config_error}")
        if self.compaction_error:
            degraded.append(f"erased data not yet rewritten away: {self.compaction_error}")
        return {
            "state": self.state_url.split("?")[0],
            "bus": self.bus_url.split("?")[0],
            "bus_durability": self.bus_durability,
            "events_ingested": self.events_ingested,
            "buffered": self.publisher.buffered,
            "users_in_memory": len(self.processor.states),
            "erasure_compaction_pending": self._compact_after is not None or self._compacting,
            "degraded": "; ".join(degraded),
        }

    # -- privacy -------------------------------------------------------------------------
    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user everywhere this process can reach; see the module docstring.

        Raises :class:`~trimtab.store.sqlite.StorageError` when a backend did not answer:
        the erasure is then incomplete and must be retried (it is idempotent).
        """
        self._forget(user_id)  # from now on nothing of theirs is published or written here
        token = erasure_token(user_id)
        self._erased_here.add(token)
        try:
            state = await self.store.erase(user_id)  # the tombstone every writer checks
            spooled = await asyncio.to_thread(self.publisher.erase_user, user_id)
            events = await self.bus.erase_user(user_id)
            decisions = await asyncio.to_thread(self._erase_decisions, user_id)
            await self.store.announce_erasure(user_id)
        except Exception as exc:
            raise StorageError(f"erasure not finished, try again: {exc}", 5) from exc
        self._compact_after = time.monotonic() + ERASURE_COMPACTION_DELAY_S
        return {"state": int(state), "events": events + spooled, "decisions": decisions}

    def _erase_decisions(self, user_id: str) -> int:
        """This process's decision log, then every other one in the data directory."""
        erased = self.decision_log.erase_user(user_id)
        self.decision_log.checkpoint_sync()
        return erased + erase_from_files(self._other_decision_logs(), [user_id])

    def _other_decision_logs(self) -> list[Path]:
        own = Path(self.decision_log.path).name
        return [p for p in logschema.decision_log_paths(self.data_dir) if p.name != own]

    async def _apply_erasure_journal(self) -> int:
        """Erase, from this data directory's decision logs and spool, users other processes
        erased."""
        last = self._journal_cursor.read_text().strip() if self._journal_cursor.exists() else "0"
        applied = 0
        while True:
            entries = await self.store.erasures_after(last)
            if not entries:
                return applied
            tokens = {t for _, t in entries if t not in self._erased_here}
            if tokens:
                for user in [u for u in self.processor.states if erasure_token(u) in tokens]:
                    self._forget(user)
                own = [Path(self.decision_log.path)]
                await asyncio.to_thread(
                    erase_from_files, [*own, *self._other_decision_logs()], (), tokens
                )
                await asyncio.to_thread(self.publisher.spool.erase_tokens, tokens)
                self._compact_after = time.monotonic() + ERASURE_COMPACTION_DELAY_S
            last = entries[-1][0]
            tmp = self._journal_cursor.with_suffix(".tmp")
            tmp.write_text(last)
            tmp.replace(self._journal_cursor)
            applied += len(entries)

    def flush(self) -> None:
        self.decision_log.flush_sync()

    async def wait_published(self, timeout: float = 10.0) -> None:
        """Wait until every accepted event is in the bus (tests, orderly shutdown)."""
        await self.publisher.flush(timeout)
