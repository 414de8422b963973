"""The pipeline of one process among many, on Redis and Redis Streams or NATS JetStream.

Every `trimtab serve` process is stateless apart from caches; what must be shared lives in the
backends (see ``docs/deployment.md``):

- **The event log is the bus.** Accepted events are queued to a
  :class:`~trimtab.backends.BufferedPublisher`, which keeps them in a bounded local buffer
  while the bus is unreachable and delivers them, once, when it is back (the buses drop
  retries by ``event_id``). Until then ``/health`` says ``degraded``.
- **Features are applied at the edge** for latency: the process loads the users' states from
  Redis, applies the events, and writes back with compare-and-set on a per-user version; a
  conflict (the same user's events arriving at two processes at once) reloads and re-applies.
- **A bus consumer is the safety net.** Each process also runs a
  :class:`~trimtab.processor.Processor` in the shared consumer group: every logged event is
  applied to the shared state even if the process that accepted it died first. Events the
  edge already applied are no-ops (the per-user event-id window), so nothing counts twice.
- **Deciding needs fresh state**: :meth:`prepare` reloads the users before a decision; when
  Redis does not answer within the site's deadline the collector serves defaults, flagged
  ``degraded``.

Each process writes its own decision log (``decisions-<host>-<pid>.sqlite`` in its data dir).
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

from trimtab.backends import BufferedPublisher, open_event_bus, open_state_store
from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, serve_policies
from trimtab.config import SiteConfig, load_config
from trimtab.decide import STICKY_ATTRIBUTE, Engine
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState, decode_state, encode_state
from trimtab.models.live import attach as attach_models
from trimtab.processor import Processor
from trimtab.reload import ConfigWatcher

log = logging.getLogger("trimtab.scaled")
MAX_CAS_ROUNDS = 10
SAFETY_NET_GRACE_S = 3.0


class SafetyNet(Processor):
    """The bus consumer behind the edge: it applies a batch only once it is ``grace_s`` old.

    Edges apply what they accept within milliseconds; the consumer exists for events whose
    edge died first. Waiting out the grace period keeps it from racing an edge that is still
    applying, which could apply one user's events out of their order.
    """

    def __init__(self, *args: Any, grace_s: float = SAFETY_NET_GRACE_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_s = grace_s

    async def process(self, messages: list) -> None:
        if messages:
            newest = max(m.event.received for m in messages) / 1000.0
            wait = newest + self.grace_s - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        await super().process(messages)


class ScaledRuntime:
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
        self.store = open_state_store(self.state_url, self.data_dir)
        self.bus = open_event_bus(self.bus_url, self.data_dir)
        self.publisher = BufferedPublisher(self.bus)
        self.group = group
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.run_processor = run_processor
        self.processor = FeatureProcessor(config.feature_specs())
        self.models = attach_models(self.processor, config, self.data_dir)  # scores, segments
        self.versions: dict[str, int] = {}
        self.decision_log = SqliteDecisionLog(self.data_dir / f"decisions-{self.consumer}.sqlite")
        self.policies: dict[str, ServedPolicy] = serve_policies(config.slots, {})
        self.engine = Engine(
            config,
            self.features_of,
            log=self.decision_log.record,
            policies=self.policies,
            assign=self._remember,
        )
        self.events_ingested = 0
        self.state_error = ""
        self.config_error = ""
        self._sticky: dict[str, dict[str, list]] = {}  # assignments not yet in Redis
        self._tasks: list[asyncio.Task[None]] = []
        self._safety_net: SafetyNet | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, flush_interval_s: float) -> None:
        names = [POLICY_KEY + name for name in self.policies]
        with contextlib.suppress(Exception):  # Redis away: the policies start afresh
            stored = await self.store.get_many(names)
            self.policies = serve_policies(self.config.slots, {}, stored)
            self.engine.policies = self.policies
        if self.run_processor:
            self._safety_net = SafetyNet(
                self.bus,
                open_state_store(self.state_url, self.data_dir),
                FeatureProcessor(self.config.feature_specs()),
                group=self.group,
                consumer=self.consumer,
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
        await self.publisher.close(timeout=10.0)
        with contextlib.suppress(Exception):
            await self._save_sticky()
        await self._save_policies()
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
                await asyncio.to_thread(self.decision_log.write_rows, rows)
            except Exception:
                log.exception("flush failed")

    async def _save_policies(self) -> None:
        blobs = {POLICY_KEY + n: p.to_state() for n, p in self.policies.items() if p.updates}
        with contextlib.suppress(Exception):
            await self.store.put_many(blobs)

    # -- the collector's interface ------------------------------------------------------
    async def accept(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Queue events to the bus, then apply them to the shared state (compare-and-set)."""
        if not events:
            return set()
        await self.publisher.publish(events)  # BufferFull propagates: the client resends
        self.events_ingested += len(events)
        for policy in self.policies.values():
            policy.observe(events)
        try:
            return await self._apply(events)
        except Exception as exc:
            # The state store is unreachable: the events are safe in the bus (or its buffer)
            # and the consumer group applies them when it is back.
            self.state_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("state store unavailable, events left to the bus consumer: %s", exc)
            return set()

    async def _apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        # Users already cached (the collector's prepare() has just loaded them) are not read
        # again: if another process changed one meanwhile, the compare-and-set below fails
        # for that user, who is then reloaded and re-applied.
        await self._load({e.user_id for e in events} - self.processor.states.keys())
        changed = self.processor.apply(events)
        for round_ in range(MAX_CAS_ROUNDS):
            dirty = self.processor.take_dirty()
            if not dirty:
                break
            blobs = {u: encode_state(s) for u, s in dirty.items()}
            expected = {u: self.versions.get(u, 0) for u in blobs}
            written, conflicts = await self.store.put_many_versioned(blobs, expected)
            self.versions.update(written)
            if not conflicts:
                break
            if round_ == MAX_CAS_ROUNDS - 1:
                log.warning("%d users kept changing; left to the bus consumer", len(conflicts))
            # another process wrote these users meanwhile: start again from what it wrote
            for user in conflicts:
                self.processor.forget(user)
                self.versions.pop(user, None)
            await self._load(conflicts)
            changed |= self.processor.apply(e for e in events if e.user_id in conflicts)
        self.state_error = ""
        return changed

    async def _load(self, user_ids: Iterable[str]) -> None:
        rows = await self.store.get_many_versioned(set(user_ids))
        states = self.processor.states
        for user in set(user_ids):
            if user in rows:
                blob, version = rows[user]
                if self.versions.get(user) != version or user not in states:
                    states[user] = decode_state(blob)
                    self.versions[user] = version
            elif self.versions.get(user, 0) != 0:
                # erased elsewhere
                states.pop(user, None)
                self.versions.pop(user, None)
        if len(states) > 200_000:  # bounded cache: drop the oldest half
            for user in list(states)[: len(states) // 2]:
                states.pop(user, None)
                self.versions.pop(user, None)

    async def prepare(self, user_ids: Iterable[str]) -> None:
        """Reload these users (other processes may have changed them) before deciding."""
        await self._load(user_ids)

    def features_of(self, user_id: str, session_id: str, page_view_id: str = "") -> dict[str, Any]:
        return self.processor.features_of(user_id, session_id, page_view_id)

    def state_of(self, user_id: str) -> UserState | None:
        return self.processor.states.get(user_id)

    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky assignment in the user's state; the flush loop writes it to Redis."""
        value = [variation, propensity]
        self.processor.set_user_value(user_id, STICKY_ATTRIBUTE, key, value)
        self._sticky.setdefault(user_id, {})[key] = value

    async def _save_sticky(self) -> None:
        """Write pending sticky assignments into the shared state (compare-and-set).

        An assignment leaves the pending set only once Redis has it, so a save interrupted by
        shutdown (or a Redis outage) is simply done again.
        """
        pending = {user: dict(values) for user, values in self._sticky.items()}
        for _ in range(MAX_CAS_ROUNDS):
            if not pending:
                return
            rows = await self.store.get_many_versioned(pending)
            blobs, expected = {}, {}
            for user, assignments in pending.items():
                blob, version = rows.get(user, (None, 0))
                state = decode_state(blob) if blob is not None else UserState(user_id=user)
                state.values.setdefault(STICKY_ATTRIBUTE, {}).update(assignments)
                blobs[user], expected[user] = encode_state(state), version
            written, conflicts = await self.store.put_many_versioned(blobs, expected)
            self.versions.update(written)
            for user in written:
                left = self._sticky.get(user, {})
                for key, value in pending[user].items():
                    if left.get(key) == value:
                        del left[key]
                if not left:
                    self._sticky.pop(user, None)
            pending = {user: pending[user] for user in conflicts}

    def reload(self, config: SiteConfig | None = None) -> SiteConfig:
        config = config or load_config(self.config.source)
        self.processor.configure(config.feature_specs())
        self.models.configure(config)
        self.policies = serve_policies(config.slots, self.policies)
        self.engine.policies = self.policies
        self.engine.reload(config)
        self.config = config
        return config

    def health(self) -> dict[str, Any]:
        degraded = []
        if not self.publisher.healthy:
            degraded.append(
                f"event bus unreachable, {self.publisher.buffered} events buffered "
                f"({self.publisher.last_error})"
            )
        if self.state_error:
            degraded.append(f"state store: {self.state_error}")
        if self.config_error:
            degraded.append(f"config change refused: {self.config_error}")
        return {
            "state": self.state_url.split("?")[0],
            "bus": self.bus_url.split("?")[0],
            "events_ingested": self.events_ingested,
            "buffered": self.publisher.buffered,
            "degraded": "; ".join(degraded),
        }

    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user from the shared state, the event log and this process's decisions.

        Events still buffered locally are published first, so none escapes the erasure.
        """
        with contextlib.suppress(TimeoutError):
            await self.publisher.flush(timeout=10.0)
        self.processor.forget(user_id)
        self.versions.pop(user_id, None)
        events = await self.bus.erase_user(user_id)
        self.processor.forget(user_id)  # the safety net may have reloaded it meanwhile
        return {
            "state": int(await self.store.delete(user_id)),
            "decisions": self.decision_log.erase_user(user_id),
            "events": events,
        }

    def flush(self) -> None:
        self.decision_log.flush_sync()

    async def wait_published(self, timeout: float = 10.0) -> None:
        """Wait until every accepted event is in the bus (tests, orderly shutdown)."""
        await self.publisher.flush(timeout)


def runtime_for(config: SiteConfig, data_dir: str | Path | None = None):
    """The embedded Runtime, or a ScaledRuntime when the config or environment names backends."""
    state = os.environ.get("TRIMTAB_STATE") or config.storage.state
    bus = os.environ.get("TRIMTAB_BUS") or config.storage.bus
    if state.startswith("redis") or bus.startswith(("redis", "nats")):
        if not state.startswith("redis"):
            raise ValueError("a shared bus needs a shared state store: set TRIMTAB_STATE=redis://…")
        return ScaledRuntime(config, data_dir)
    from trimtab.runtime import Runtime

    return Runtime(config, data_dir)
