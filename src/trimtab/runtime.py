"""The pipeline of one process: events in, features, decisions out, erasure everywhere.

:class:`Runtime` is the one pipeline, whatever the deployment. It logs an event durably before
applying it, keeps a bounded cache of user states (:mod:`trimtab.store.cache`), decides with
the :class:`~trimtab.decide.Engine` over its features, serves the config's policies, and runs
one flush loop (config changes, policy windows, user states, the decision log, erasures from
elsewhere, compaction), one ``/health`` and one erasure path.

What differs between deployments is a :class:`Deployment`, a small strategy object:

- where events are logged (the SQLite event log, or the shared bus behind a local spool);
- how user states are written (in memory, flushed to SQLite with the log position, or to
  Redis with compare-and-set on each accept);
- who else applies events (nobody: a restart replays the log; or every process's bus
  consumer, the safety net) and who else erases (other processes, through a journal).

:class:`~trimtab.embedded.Embedded` (the default) and :class:`~trimtab.scaled.Scaled` are the
two; :func:`~trimtab.pipeline.open_pipeline` picks one from the config and the environment.

Durability: an event is acknowledged only once it is durable where the deployment logs it;
when it cannot be, :meth:`Runtime.accept` raises :class:`~trimtab.store.sqlite.StorageError`
and the collector answers 503. Erasure leaves a tombstone first, so no late event, flush or
replay brings an erased user back; files are rewritten (compacted) about a second after the
last erasure, so a burst of erasures costs one rewrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from trimtab.bandits.serving import ServedPolicy
from trimtab.config import SiteConfig, load_config
from trimtab.decide import STICKY_ATTRIBUTE, Decision, Engine
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.embedded import Embedded
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState
from trimtab.models.live import attach as attach_models
from trimtab.reload import ConfigWatcher
from trimtab.store.sqlite import StorageError

log = logging.getLogger("trimtab")
ERASURE_COMPACTION_DELAY_S = 1.0  # a burst of erasures costs one rewrite
COMPACTION_RETRY_S = 5.0
STUCK_FLUSH_S = 2.0
T = TypeVar("T")


def run_now(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code, in a thread of its own when this one
    already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


class Deployment(Protocol):
    """What differs between deployments of :class:`Runtime`; see the module docstring.

    A deployment is bound to one runtime (:meth:`open`) and works on its processor, its
    ``erased`` set and its decision log.
    """

    kind: str  # "embedded" or "scaled"
    shared: bool  # several processes may serve the same site

    def open(self, runtime: Runtime) -> SqliteDecisionLog:
        """Open the stores in the runtime's data directory; the decision log to write."""
        ...

    def recover(self) -> int:
        """Re-apply what was logged but not yet in the stored states (after a crash)."""
        ...

    # -- where events are logged -----------------------------------------------------------
    def log_now(self, events: list[AnyEvent]) -> None:
        """Log events durably, in this thread; :class:`StorageError` when they cannot be."""
        ...

    async def log(self, events: list[AnyEvent]) -> None:
        """Log events durably; :class:`StorageError` when they cannot be."""
        ...

    # -- how states are read and written -----------------------------------------------------
    def load_now(self, user_ids: Iterable[str]) -> None:
        """Have these users' states in memory if they can be had without waiting."""
        ...

    async def load(self, user_ids: Iterable[str]) -> None:
        """Have these users' current states in memory (others may have changed them)."""
        ...

    async def apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Apply logged events to the states; the (user, session) pairs that changed."""
        ...

    def remember(self, user_id: str, key: str, value: list[float]) -> None:
        """Keep a sticky assignment (already set in the state in memory) until it is stored."""
        ...

    def serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """The config's policy rules served, keeping what each policy has learned."""
        ...

    async def flush(self, rows: list[tuple[Any, ...]]) -> None:
        """Store what changed since the last flush, and these decision rows."""
        ...

    def flush_now(self, rows: list[tuple[Any, ...]]) -> None:
        """The same, in this thread (outside an event loop, or a final one)."""
        ...

    def unwritten(self) -> int:
        """How many users' states a failed flush keeps to write again."""
        ...

    # -- erasure ------------------------------------------------------------------------------
    def forget(self, user_id: str) -> None:
        """Drop what the deployment holds of an erased user (on the event loop)."""
        ...

    async def erase(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store this process reaches; counts per store."""
        ...

    async def erased_elsewhere(self) -> bool:
        """Apply erasures other processes made; True when files now need a rewrite."""
        ...

    async def compact(self) -> bool:
        """Rewrite every file after erasures; False when it must be tried again soon."""
        ...

    # -- lifecycle and health -----------------------------------------------------------------
    async def start(self) -> list[asyncio.Task[None]]:
        """Start what runs beside the flush loop; the tasks to cancel at stop."""
        ...

    async def stop(self) -> None:
        """After the final flush: hand over what is pending, close connections."""
        ...

    def close(self) -> None:
        """Close the files and connections (outside an event loop)."""
        ...

    def degraded(self) -> list[str]:
        """Why this deployment's backends are degraded (empty when they are not)."""
        ...

    def figures(self) -> dict[str, Any]:
        """What ``/health`` reports of the backends."""
        ...


class Runtime:
    """One process's pipeline over a :class:`Deployment` (the embedded one by default)."""

    def __init__(
        self,
        config: SiteConfig,
        data_dir: str | Path | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir or config.storage.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.max_users = config.storage.max_users_in_memory
        self.erased: set[str] = set()  # tombstoned users met so far (the decision log's too)
        self.processor = FeatureProcessor(config.feature_specs())
        self.deployment: Deployment = deployment if deployment is not None else Embedded()
        self.decision_log = self.deployment.open(self)
        self.models = attach_models(self.processor, config, self.data_dir)  # scores, segments
        self.policies: dict[str, ServedPolicy] = {}
        self.policies = self.deployment.serve_policies(config)
        self.engine = Engine(
            config,
            self.features_of,
            log=self.decision_log.record,
            policies=self.policies,
            assign=self._remember,
        )
        self.events_ingested = 0
        self.append_error = ""
        self.flush_error = ""
        self.config_error = ""
        self.compaction_error = ""
        self._compact_after: float | None = None  # files to rewrite after erasures, from when
        self._compacting = False
        self._flush_started: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.replayed = self.deployment.recover()

    # -- configuration -------------------------------------------------------------------
    def reload(self, config: SiteConfig | None = None) -> SiteConfig:
        """Re-read the config file (or take ``config``) and swap it in without a restart,
        keeping every user's state and what each policy has learned.

        An invalid config raises :class:`~trimtab.config.ConfigError` and the running one stays.
        """
        if config is None:
            config = load_config(self.config.source)
        self.processor.configure(config.feature_specs())
        self.models.configure(config)
        self.policies = self.deployment.serve_policies(config)
        self.engine.policies = self.policies
        self.engine.reload(config)
        self.config = config
        return config

    # -- the hot path --------------------------------------------------------------------
    def _admitted(self, events: list[AnyEvent]) -> list[AnyEvent]:
        """The events to log: none of an erased user."""
        self.deployment.load_now(e.user_id for e in events)  # meets tombstones too
        if self.erased:
            return [e for e in events if e.user_id not in self.erased]
        return events

    def _logged(self, events: list[AnyEvent]) -> None:
        self.append_error = ""
        self.events_ingested += len(events)
        for policy in self.policies.values():
            policy.observe(events)

    async def accept(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Log gated events durably, then apply them; the (user, session) pairs that changed.

        Events of erased users are dropped. Raises :class:`StorageError` (nothing logged,
        nothing applied) when they cannot be made durable.
        """
        events = self._admitted(events)
        if not events:
            return set()
        try:
            await self.deployment.log(events)
        except StorageError as exc:
            self.append_error = str(exc)[:300]
            raise
        self._logged(events)
        return await self.deployment.apply(events)

    def ingest(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """:meth:`accept` without an event loop (scripts, simulations, tests of the embedded
        deployment, whose log and states are local)."""
        events = self._admitted(events)
        if not events:
            return set()
        try:
            self.deployment.log_now(events)
        except StorageError as exc:
            self.append_error = str(exc)[:300]
            raise
        self._logged(events)
        return self.processor.apply(events)

    async def prepare(self, user_ids: Iterable[str]) -> None:
        """Have these users' current states at hand before deciding."""
        await self.deployment.load(user_ids)

    def features_of(self, user_id: str, session_id: str, page_view_id: str = "") -> dict[str, Any]:
        self.deployment.load_now((user_id,))
        return self.processor.features_of(user_id, session_id, page_view_id)

    def state_of(self, user_id: str) -> UserState | None:
        self.deployment.load_now((user_id,))
        return self.processor.states.get(user_id)

    def decide(
        self, user_id: str, session_id: str, slots: Iterable[str] | None = None
    ) -> list[Decision]:
        return self.engine.decide(user_id, session_id, slots)

    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky experiment assignment in the user's state (stored with it)."""
        self.deployment.load_now((user_id,))
        if user_id in self.erased:
            return
        value: list[float] = [variation, propensity]
        self.processor.set_user_value(user_id, STICKY_ATTRIBUTE, key, value)
        self.deployment.remember(user_id, key, value)

    # -- the flush loop ------------------------------------------------------------------
    def learn(self, now_ms: float | None = None) -> int:
        """Close ended reward windows: the online policy updates. Returns windows closed."""
        return sum(policy.expire(now_ms) for policy in self.policies.values())

    async def flush_async(self) -> None:
        """One flush: policies' ended windows, states, decision rows, then compaction when
        erasures are due. What a failed flush could not write is written by the next one."""
        self.learn()
        rows = self.decision_log.take_rows()
        self._flush_started = time.monotonic()
        try:
            await self.deployment.flush(rows)
        except BaseException as exc:  # failed, or stopping: the next flush writes it again
            self.decision_log.restore(rows)
            if isinstance(exc, asyncio.CancelledError):
                self.flush_error = "RuntimeError: flush interrupted by shutdown"
            else:
                self.flush_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            self._flush_started = None
        self.flush_error = ""
        if await self.deployment.erased_elsewhere():
            self.compaction_due(ERASURE_COMPACTION_DELAY_S)
        due = self._compact_after
        if due is not None and time.monotonic() >= due:
            with contextlib.suppress(Exception):  # retried; /health says compaction_error
                await self.compact()

    async def decisions_written(self, wait_s: float = 10.0) -> None:
        """Write the buffered decision rows, after the flush under way (whose rows it took
        are not in the table until it ends): a reader of the log then sees every decision
        answered before it asked. Waits at most ``wait_s`` for a stuck flush."""
        deadline = time.monotonic() + wait_s
        while self._flush_started is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        rows = self.decision_log.take_rows()
        try:
            await asyncio.to_thread(self.decision_log.write_rows, rows)
        except BaseException:
            self.decision_log.restore(rows)
            raise

    def flush(self) -> None:
        """Store changed states, policies and buffered decisions now, in this thread."""
        self.learn()
        rows = self.decision_log.take_rows()
        try:
            self.deployment.flush_now(rows)
        except Exception as exc:
            self.decision_log.restore(rows)
            self.flush_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        self.flush_error = ""

    async def flush_forever(self, interval_s: float) -> None:
        """Flush every ``interval_s`` until cancelled; a failed flush is retried next round.
        A changed config file is picked up (or refused, said by ``/health``) first."""
        watcher = ConfigWatcher(self.config.source, self.reload)
        while True:
            await asyncio.sleep(interval_s)
            watcher.check()
            self.config_error = watcher.last_error
            try:
                await self.flush_async()
            except Exception as exc:  # keep flushing; the next round retries it all
                log.warning("flush failed, will retry: %s", exc)

    def compaction_due(self, delay_s: float) -> None:
        """Have the flush loop rewrite the files in ``delay_s`` (after erasures)."""
        self._compact_after = time.monotonic() + delay_s

    async def compact(self) -> None:
        """Rewrite every file after erasures, so no byte of an erased user survives in free or
        stale space (the flush loop runs this about a second after the last erasure)."""
        self._compacting = True  # before clearing the due time: health never sees neither
        self._compact_after = None
        try:
            done = await self.deployment.compact()
        except Exception as exc:
            self.compaction_error = f"{type(exc).__name__}: {exc}"[:300]
            self.compaction_due(COMPACTION_RETRY_S)
            raise
        finally:
            self._compacting = False
        if not done:  # a server was rewriting already (maybe from before): again soon
            self.compaction_due(1.0)
            return
        self.compaction_error = ""

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, flush_interval_s: float) -> None:
        """Start the flush loop and what the deployment runs beside it."""
        self._tasks = await self.deployment.start()
        self._tasks.append(asyncio.create_task(self.flush_forever(flush_interval_s)))

    async def stop(self) -> None:
        """Stop the loops and flush a last time (erasures pending are compacted first)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._compact_after is not None:
            self._compact_after = time.monotonic()  # erasures pending: rewrite before leaving
        try:
            await self.flush_async()
        except Exception as exc:  # what is logged is safe: it is applied again
            log.warning("final flush failed: %s", exc)
        await self.deployment.stop()

    def close(self) -> None:
        """Flush a last time and close every file and connection (outside an event loop;
        after :meth:`stop` too). Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._compact_after is not None:  # erasures pending: rewrite before leaving
            with contextlib.suppress(Exception):
                run_now(self.compact())
        try:
            self.flush()
        except Exception as exc:
            log.warning("final flush failed: %s", exc)
        self.deployment.close()

    # -- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Figures for ``/health``; ``degraded`` says why, or is empty."""
        degraded = []
        if self.append_error:
            degraded.append(f"event log not writable, events refused: {self.append_error}")
        degraded.extend(self.deployment.degraded())
        if self.flush_error:
            degraded.append(
                f"state flush failing ({self.deployment.unwritten()} users kept to retry): "
                f"{self.flush_error}"
            )
        elif self._flush_started is not None:
            waiting = time.monotonic() - self._flush_started
            if waiting > STUCK_FLUSH_S:
                degraded.append(f"state flush waiting for {waiting:.1f} s (is a data file locked?)")
        if self.compaction_error:
            degraded.append(f"erased data not yet rewritten away: {self.compaction_error}")
        if self.decision_log.dropped:
            degraded.append(f"{self.decision_log.dropped} decisions dropped (writer far behind)")
        if self.config_error:
            degraded.append(f"config change refused: {self.config_error}")
        return {
            "degraded": "; ".join(degraded),
            **self.deployment.figures(),
            "events_ingested": self.events_ingested,
            "replayed_at_start": self.replayed,
            "users_in_memory": len(self.processor.states),
            "erasure_compaction_pending": self._compact_after is not None or self._compacting,
        }

    # -- privacy --------------------------------------------------------------------------
    def forget(self, user_id: str) -> None:
        """Tombstone a user in this process: nothing of theirs is logged or written after."""
        self.erased.add(user_id)
        self.processor.forget(user_id)
        self.decision_log.forget(user_id)
        self.deployment.forget(user_id)

    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store this process reaches; counts per store.

        The tombstone is set first, on the event loop; then the stored rows go, and about a
        second later the next flush rewrites every file (:meth:`compact`). Raises
        :class:`StorageError` when a store did not answer: the erasure is then incomplete and
        must be retried (it is idempotent; the tombstone in memory holds meanwhile).
        """
        in_memory = user_id in self.processor.states
        self.forget(user_id)
        try:
            counts = await self.deployment.erase(user_id)
        except Exception as exc:
            raise StorageError(f"erasure not finished, try again: {exc}", 5) from exc
        self.compaction_due(ERASURE_COMPACTION_DELAY_S)
        counts["state"] = int(counts["state"] or in_memory)
        return counts

    def erase(self, user_id: str) -> dict[str, int]:
        """:meth:`erase_async` outside an event loop."""
        return run_now(self.erase_async(user_id))
